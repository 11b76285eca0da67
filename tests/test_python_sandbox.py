"""PythonInterpreter's embedded sandbox, proved from the inside: code that tries to escape or
exhaust the machine gets a clear observation, and the service (this test process) is unharmed.

Every test runs real bubblewrap; the module is skipped where bubblewrap cannot run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from workers.backend.memory import MemoryBackend
from workers.errors import ToolError
from workers.settings import SandboxSettings
from workers.tools.base import ToolContext
from workers.tools.python import PythonInterpreterTool, build_python_tool
from workers.tools.python.embedded import EmbeddedSandbox

pytestmark = pytest.mark.anyio

LIMITS = SandboxSettings(
    mode="embedded",
    cpu_seconds=2,
    # Long, so on a busy machine the CPU and output limits still strike first where tested;
    # the wall clock has its own test with a short one.
    wall_seconds=60.0,
    memory_mb=256,
    max_processes=16,
    max_output_bytes=64 * 1024,
    tmp_mb=8,
)
_probe, _why = EmbeddedSandbox.create(LIMITS)
if _probe is None:
    pytest.skip(f"no embedded sandbox here: {_why}", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
CANARY = "HR_SANDBOX_CANARY_3f9c"


@pytest.fixture
def tool() -> PythonInterpreterTool:
    built, why = build_python_tool(LIMITS)
    assert built is not None, why
    return built


async def run(tool: PythonInterpreterTool, code: str) -> str:
    ctx = ToolContext(job_id="job_sandbox", agent=0, backend=MemoryBackend())
    return (await tool({"code": code}, ctx)).text


async def test_runs_code_and_shows_stdout_and_stderr_as_the_released_code_does(
    tool: PythonInterpreterTool,
) -> None:
    text = await run(tool, "import sys\nprint(6 * 7)\nprint('careful', file=sys.stderr)")
    assert text == "stdout:\n42\n\nstderr:\ncareful\n"
    assert await run(tool, "x = 1") == "Finished execution."
    failed = await run(tool, "1 / 0")
    assert failed.startswith("stderr:\nTraceback") and "ZeroDivisionError" in failed


async def test_a_fenced_block_runs_and_empty_code_is_a_tool_error(tool: PythonInterpreterTool) -> None:
    assert await run(tool, "```python\nprint('fenced')\n```") == "stdout:\nfenced\n"
    with pytest.raises(ToolError, match="<code>"):
        await run(tool, "   ")


async def test_no_network_not_even_the_services_own_loopback(tool: PythonInterpreterTool) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    listener.settimeout(0.2)
    try:
        code = (
            "import socket\n"
            "print(sorted(name for _, name in socket.if_nameindex()))\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        )
        text = await run(tool, code)
        assert "stdout:\n['lo']" in text
        assert "ConnectionRefusedError" in text
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever reached the service's socket
    finally:
        listener.close()


async def test_the_services_files_and_home_do_not_exist_inside(tool: PythonInterpreterTool) -> None:
    targets = [str(ROOT / "pyproject.toml"), str(ROOT / "workers" / "settings.py"), sys.executable]
    targets += [str(Path.home()), "/etc/passwd", "/etc/shadow", "/root", "/work"]
    code = (
        "import os\n"
        f"for path in {targets!r}:\n"
        "    print(path, os.path.exists(path))\n"
        "print(sorted(os.listdir('/')))\n"
        "open('/usr/evil', 'w')\n"
    )
    text = await run(tool, code)
    for path in targets:
        assert f"{path} False" in text
    top = text.split("stdout:\n")[1].splitlines()[len(targets)]
    assert set(eval(top)) <= {"bin", "dev", "lib", "lib64", "proc", "tmp", "usr"}
    assert "Read-only file system" in text


async def test_the_services_environment_and_secrets_are_not_visible(
    tool: PythonInterpreterTool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CANARY, "secret-value")
    code = (
        "import os, glob\n"
        "print(dict(os.environ))\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        "        print(path, open(path, 'rb').read())\n"
        "    except OSError as exc:\n"
        "        print(path, exc)\n"
    )
    text = await run(tool, code)
    assert "'PATH'" in text  # the program did run and print its environment
    assert CANARY not in text and "secret-value" not in text
    assert os.environ[CANARY] == "secret-value"


async def test_a_fork_bomb_hits_the_process_limit_and_the_service_can_still_fork(
    tool: PythonInterpreterTool,
) -> None:
    code = (
        "import os, time\n"
        "children = 0\n"
        "try:\n"
        "    for _ in range(10_000):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        children += 1\n"
        "except OSError as exc:\n"
        "    print('stopped after', children, 'children:', exc)\n"
    )
    started = time.monotonic()
    text = await run(tool, code)
    assert "stopped after" in text and "Resource temporarily unavailable" in text
    children = int(text.split("stopped after ")[1].split()[0])
    assert children < LIMITS.max_processes
    # The sandbox's processes died with it: the service forks, and the sandbox runs again.
    assert await anyio.to_thread.run_sync(lambda: subprocess.run(["true"], check=False).returncode) == 0
    assert await run(tool, "print('again')") == "stdout:\nagain\n"
    assert time.monotonic() - started < 30


async def test_memory_past_the_limit_is_a_memory_error_and_below_it_works(
    tool: PythonInterpreterTool,
) -> None:
    text = await run(tool, "block = bytearray(1024 * 1024 * 1024)\nprint('allocated')")
    assert "MemoryError" in text and "allocated" not in text
    assert "the memory limit is 256 MiB" in text
    assert await run(tool, "block = bytearray(64 * 1024 * 1024)\nprint(len(block))") == "stdout:\n67108864\n"


async def test_an_endless_loop_is_stopped_by_the_cpu_limit(tool: PythonInterpreterTool) -> None:
    started = time.monotonic()
    text = await run(tool, "print('spinning')\nwhile True:\n    pass")
    assert text.startswith("stdout:\nspinning\n")
    assert "[PythonInterpreter Error] TimeoutError: CPU time limit (2 s) exceeded." in text
    assert time.monotonic() - started < LIMITS.wall_seconds


async def test_a_sleeping_program_is_stopped_by_the_wall_clock() -> None:
    tool, _ = build_python_tool(LIMITS.model_copy(update={"wall_seconds": 2.0}))
    assert tool is not None
    started = time.monotonic()
    text = await run(tool, "import time\nprint('waiting')\ntime.sleep(600)")
    assert text == "stdout:\nwaiting\n\n[PythonInterpreter Error] TimeoutError: Execution timed out."
    assert time.monotonic() - started < 30


async def test_ten_megabytes_of_output_is_cut_and_the_program_stopped(tool: PythonInterpreterTool) -> None:
    started = time.monotonic()
    text = await run(tool, "import sys\nsys.stdout.write('x' * 10_000_000)\nprint('never')")
    assert "OutputLimitExceeded" in text and "never" not in text
    assert len(text) <= LIMITS.observation_max_chars + 300
    assert time.monotonic() - started < 30  # stopped at the limit, not at the wall clock


async def test_the_private_tmp_is_capped_and_empty_each_call(tool: PythonInterpreterTool) -> None:
    text = await run(
        tool,
        "import os\nprint(os.listdir('/tmp'))\nopen('/tmp/left-behind', 'w').write('x')\n"
        "open('/tmp/big', 'wb').write(b'0' * (32 * 1024 * 1024))",
    )
    assert text.startswith("stdout:\n[]\n")
    assert "File too large" in text or "No space left on device" in text
    assert await run(tool, "import os\nprint(os.listdir('/tmp'))") == "stdout:\n[]\n"


async def test_limits_come_from_settings() -> None:
    roomy = LIMITS.model_copy(update={"memory_mb": 1024, "max_output_bytes": 2048})
    built, _ = build_python_tool(roomy)
    assert built is not None
    assert await run(built, "block = bytearray(512 * 1024 * 1024)\nprint('ok')") == "stdout:\nok\n"
    text = await run(built, "print('y' * 5000)")
    assert "more than 2048 bytes" in text


def test_no_sandbox_no_tool_and_the_reason_is_given() -> None:
    tool, why = build_python_tool(LIMITS.model_copy(update={"bwrap": "no-such-bwrap"}))
    assert tool is None and "bubblewrap ('no-such-bwrap') is not installed" in why
    tool, why = build_python_tool(LIMITS.model_copy(update={"mode": "off"}))
    assert tool is None and "off" in why
    tool, why = build_python_tool(LIMITS.model_copy(update={"python": "/opt/nowhere/python3"}))
    assert tool is None and "/opt/nowhere/python3" in why
    tool, why = build_python_tool(LIMITS.model_copy(update={"mode": "remote"}))
    assert tool is None and "endpoints is empty" in why


async def test_calls_run_concurrently_in_separate_sandboxes(tool: PythonInterpreterTool) -> None:
    results: list[Any] = [None] * 4

    async def one(i: int) -> None:
        results[i] = await run(
            tool, f"import os\nopen('/tmp/mine', 'w').write('{i}')\nprint(open('/tmp/mine').read())"
        )

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(one, i)
    assert results == [f"stdout:\n{i}\n" for i in range(4)]


async def test_readyz_says_why_there_is_no_sandbox_and_no_code_runs(mini_corpus: Path) -> None:
    from tests.server import api_settings, live_server, run_to_end

    for mode, status in (("auto", 200), ("embedded", 503)):
        settings = api_settings(mini_corpus, sandbox={"mode": mode, "bwrap": "no-such-bwrap"})
        with live_server(settings) as server:
            async with server.client() as client:
                ready = await client.get("/readyz")
                body = {"query": "What is 6 * 7?", "agents": 1, "max_rounds": 4}
                created = await client.post("/v1/research", json=body)
                events = await run_to_end(client, created.json()["id"])
        check = ready.json()["checks"]["sandbox"]
        assert ready.status_code == status
        assert check["ok"] is (status == 200)
        assert "PythonInterpreter is not offered" in check["detail"] and "no-such-bwrap" in check["detail"]
        # The simulated model would compute 6 * 7, but the tool is not offered to it.
        calls = [e["data"]["name"] for e in events if e["type"] == "tool.called"]
        assert calls and "PythonInterpreter" not in calls


async def test_readyz_names_the_sandbox_in_use(mini_corpus: Path) -> None:
    from tests.server import api_settings, live_server

    with live_server(api_settings(mini_corpus)) as server:
        async with server.client() as client:
            check = (await client.get("/readyz")).json()["checks"]["sandbox"]
    assert check["ok"] is True and check["detail"].startswith(
        "PythonInterpreter runs on: embedded bubblewrap"
    )
