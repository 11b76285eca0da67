"""PythonInterpreter on SandboxFusion-compatible endpoints: the request sent, the observation
made from the answer, and fallback along the endpoint list (against local fakes)."""

from __future__ import annotations

import socket

import pytest

from tests.fake_sandboxfusion import FakeSandboxFusion
from workers.backend.memory import MemoryBackend
from workers.errors import RetryableError
from workers.settings import SandboxSettings
from workers.tools.base import ToolContext
from workers.tools.python import PythonInterpreterTool, build_python_tool

pytestmark = pytest.mark.anyio

CTX = ToolContext(job_id="job_remote", agent=0, backend=MemoryBackend())


def remote_tool(*endpoints: str, **overrides: object) -> PythonInterpreterTool:
    settings = SandboxSettings(
        mode="remote", endpoints=list(endpoints), wall_seconds=7, memory_mb=300, **overrides
    )
    tool, why = build_python_tool(settings)
    assert tool is not None, why
    return tool


def closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


async def test_sends_the_run_code_request_and_renders_the_answer() -> None:
    with FakeSandboxFusion() as fake:
        tool = remote_tool(fake.base_url)
        try:
            out = await tool({"code": "print(1)"}, CTX)
        finally:
            await tool.aclose()
    assert out.text == "stdout:\nran 8 characters\n"
    assert out.provider == fake.base_url
    assert fake.requests == [
        {"code": "print(1)", "language": "python", "run_timeout": 7.0, "memory_limit_MB": 300}
    ]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("timeout", "[PythonInterpreter Error] TimeoutError: Execution timed out."),
        ("failed", "stderr:\nTraceback (most recent call last):\nValueError\n"),
    ],
)
async def test_the_programs_own_failures_go_to_the_model(mode: str, expected: str) -> None:
    with FakeSandboxFusion(mode=mode) as fake:
        tool = remote_tool(fake.base_url)
        try:
            out = await tool({"code": "x"}, CTX)
        finally:
            await tool.aclose()
    assert out.text == expected


@pytest.mark.parametrize("broken_mode", ["500", "sandbox_error"])
async def test_falls_back_to_the_next_endpoint(broken_mode: str) -> None:
    with FakeSandboxFusion(mode=broken_mode) as broken, FakeSandboxFusion() as good:
        tool = remote_tool(closed_port(), broken.base_url, good.base_url)
        try:
            out = await tool({"code": "print(2)"}, CTX)
        finally:
            await tool.aclose()
    assert out.text == "stdout:\nran 8 characters\n" and out.provider == good.base_url
    assert len(broken.requests) == 1 and len(good.requests) == 1


async def test_every_endpoint_down_is_an_outage_not_a_crash() -> None:
    with FakeSandboxFusion(mode="sandbox_error") as broken:
        tool = remote_tool(closed_port(), broken.base_url)
        try:
            with pytest.raises(RetryableError, match="no sandbox could run the code"):
                await tool({"code": "print(3)"}, CTX)
        finally:
            await tool.aclose()


async def test_auto_mode_tries_remote_first_then_the_embedded_sandbox() -> None:
    settings = SandboxSettings(mode="auto", endpoints=[closed_port()], wall_seconds=5)
    tool, why = build_python_tool(settings)
    assert tool is not None
    names = [s.name for s in tool.sandboxes]
    try:
        if "embedded" not in names:
            pytest.skip(f"no embedded sandbox here: {why}")
        out = await tool({"code": "print('local')"}, CTX)
    finally:
        await tool.aclose()
    assert out.text == "stdout:\nlocal\n" and out.provider == "embedded"
