"""Shared test set-up. Nothing here may reach beyond loopback: a guard refuses any other address,
so a test that would call a real LLM or website fails loudly instead (like pydantic-ai's
ALLOW_MODEL_REQUESTS = False)."""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_search_apis import SearchAPIs, Website
from workers.llm.proxy import VARIABLES as PROXY_VARIABLES

DATA = Path(__file__).parent / "data"

# Settings come from the environment; a developer's own HR_* variables must not leak into tests.
for _name in [n for n in os.environ if n.startswith("HR_")]:
    del os.environ[_name]
# So is a proxy: the model client honours HTTPS_PROXY & co., and every test endpoint is on
# loopback (the proxy tests set their own).
for _name in [n for n in os.environ if n.lower() in PROXY_VARIABLES]:
    del os.environ[_name]

# The sqlite backend's default file lives in the user's data folder: tests (and the processes
# they start, which inherit this) never write there, only into a temporary folder.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="hr-test-data-")


def _loopback(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths
    host = address[0]
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if not _loopback(address):
        raise ConnectionRefusedError(f"tests may only connect to loopback, not {address!r}")
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if not _loopback(address):
        raise ConnectionRefusedError(f"tests may only connect to loopback, not {address!r}")
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def mini_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.corpus import build_corpus

    path = tmp_path_factory.mktemp("corpus") / "mini.sqlite"
    build_corpus(path, [DATA / "mini_corpus.jsonl"], wiki=False)
    return path


@pytest.fixture(scope="session")
def wiki_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.corpus import build_corpus

    path = tmp_path_factory.mktemp("wiki") / "wiki.sqlite"
    build_corpus(path, None, wiki=True)
    return path


# Local fakes of the search providers' APIs and of web pages; one of each per test module.
@pytest.fixture(scope="module")
def apis() -> Iterator[SearchAPIs]:
    with SearchAPIs() as fake:
        yield fake


@pytest.fixture(scope="module")
def site() -> Iterator[Website]:
    with Website() as web:
        yield web
