"""The embedded sandbox: one fresh bubblewrap process per call, on this machine.

Isolation (each point is tested from the inside by `tests/test_python_sandbox.py`):

- namespaces: every one bubblewrap knows (user, pid, network, ipc, uts, cgroup), so there is
  no network at all (not even loopback to this service) and only the sandbox's own processes
  are visible; nested user namespaces are refused (`--disable-userns`);
- files: the system folders of `ro_binds` read-only, a minimal `/dev` and `/proc`, a private,
  empty, size-capped tmpfs as `/tmp` and working folder. Nothing else of the host exists inside:
  not the service's code, its virtual environment, its config, its data or its home;
- environment: bubblewrap itself starts with an empty environment (its pid-1 helper's
  `/proc/1/environ` is readable inside) and the program gets only PATH, HOME and LANG;
- limits: CPU seconds, address space, file size, open files and processes as rlimits set
  before bubblewrap starts (inherited, and not raisable from inside), the wall clock and the
  output size watched from here; a run past either is killed with its whole pid namespace.

The process limit is per uid. Run as root, each concurrent slot uses its own unprivileged uid
(`uid_base + slot`), so the count is exactly the sandbox's; run as any other user, the limit is
added on top of the tasks that user already has when the call starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from workers.errors import RetryableError
from workers.settings import SandboxSettings
from workers.tools.python.types import RunResult

log = logging.getLogger(__name__)

PYTHON_CANDIDATES = ("/usr/local/bin/python3", "/usr/bin/python3")
# What the program sees of an environment.
SANDBOX_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
_READ_CHUNK = 65536
_MAX_OPEN_FILES = 256


def _find_python(settings: SandboxSettings) -> str | None:
    if settings.python:
        return settings.python if Path(settings.python).is_file() else None
    return next((p for p in PYTHON_CANDIDATES if Path(p).is_file()), None)


def _tasks_of(uid: int) -> int:
    """Threads of every process owned by `uid` (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            count += len(os.listdir(f"/proc/{entry.name}/task"))
        except OSError:
            continue  # the process ended while we looked
    return count


class EmbeddedSandbox:
    name = "embedded"

    def __init__(self, settings: SandboxSettings, *, bwrap: str, python: str) -> None:
        self.settings = settings
        self.bwrap = bwrap
        self.python = python
        self._root = os.geteuid() == 0
        self._free_slots = list(range(settings.max_concurrency))
        self._slots = anyio.Semaphore(settings.max_concurrency)

    @classmethod
    def create(cls, settings: SandboxSettings) -> tuple[EmbeddedSandbox | None, str]:
        """The sandbox, or None and why it cannot work on this machine."""
        bwrap = shutil.which(settings.bwrap)
        if bwrap is None:
            return None, f"bubblewrap ('{settings.bwrap}') is not installed (Debian package `bubblewrap`)"
        python = _find_python(settings)
        if python is None:
            wanted = settings.python or " or ".join(PYTHON_CANDIDATES)
            return None, f"no Python interpreter for the sandbox at {wanted}"
        if not any(python.startswith(b.rstrip("/") + "/") for b in settings.ro_binds):
            return None, f"the sandbox's interpreter {python} is outside sandbox.ro_binds {settings.ro_binds}"
        sandbox = cls(settings, bwrap=bwrap, python=python)
        problem = sandbox.probe()
        if problem:
            return None, problem
        return sandbox, f"embedded bubblewrap sandbox, interpreter {python}"

    def probe(self) -> str | None:
        """Run a trivial program once, synchronously (start-up only); None when it works."""
        try:
            done = subprocess.run(
                self.argv(),
                input=b"print(6 * 7)",
                capture_output=True,
                timeout=15,
                env={},
                preexec_fn=self._limits(0),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap could not start: {exc}"
        if done.returncode != 0 or done.stdout.strip() != b"42":
            err = done.stderr.decode(errors="replace").strip()[-300:]
            return f"bubblewrap does not work here (exit {done.returncode}: {err or 'no output'})"
        return None

    def argv(self) -> list[str]:
        s = self.settings
        args = [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns"]
        args += ["--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv"]
        for path in s.ro_binds:
            p = Path(path)
            if p.is_symlink():
                args += ["--symlink", os.readlink(p), path]
            elif p.exists():
                args += ["--ro-bind", path, path]
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--size", str(s.tmp_mb * 1024 * 1024), "--tmpfs", "/tmp", "--chdir", "/tmp"]
        for key, value in SANDBOX_ENV.items():
            args += ["--setenv", key, value]
        # -I: no user site, no PYTHON* variables, no script folder on sys.path; -u: output
        # reaches us as it is written, so a run stopped at a limit still shows what it printed.
        # The program comes on stdin, so its size has no argv limit.
        args += ["--", self.python, "-I", "-u", "-B", "-X", "utf8", "-"]
        return args

    def _limits(self, slot: int) -> Callable[[], None]:
        s = self.settings
        nproc = s.max_processes + 2  # bubblewrap's own two processes
        if not self._root:
            nproc += _tasks_of(os.getuid())
        memory = s.memory_mb * 1024 * 1024
        fsize = s.tmp_mb * 1024 * 1024
        # uvloop's subprocesses take no user/group arguments: the switch happens here.
        uid = s.uid_base + slot if self._root else None

        def apply() -> None:
            # Runs in the child between fork and exec: only async-signal-safe work here.
            resource.setrlimit(resource.RLIMIT_CPU, (s.cpu_seconds, s.cpu_seconds + 1))
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            resource.setrlimit(resource.RLIMIT_NOFILE, (_MAX_OPEN_FILES, _MAX_OPEN_FILES))
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        return apply

    async def run(self, code: str) -> RunResult:
        async with self._slots:
            slot = self._free_slots.pop()
            try:
                return await self._run(code, slot)
            finally:
                self._free_slots.append(slot)

    async def _run(self, code: str, slot: int) -> RunResult:
        s = self.settings
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={},
                start_new_session=True,
                preexec_fn=self._limits(slot),
            )
        except OSError as exc:
            raise RetryableError(f"the sandbox could not start: {exc}") from exc
        out = bytearray()
        err = bytearray()
        limit: str | None = None
        budget = s.max_output_bytes

        async def pump(stream: asyncio.StreamReader | None, sink: bytearray) -> None:
            nonlocal limit
            assert stream is not None
            # Read to the end even past the limit (discarding), so the pipe sees its EOF.
            while chunk := await stream.read(_READ_CHUNK):
                room = budget - len(out) - len(err)
                if room > 0:
                    sink += chunk[:room]
                if len(chunk) > room and limit is None:
                    limit = "output"
                    _kill(proc)

        try:
            assert proc.stdin is not None
            proc.stdin.write(code.encode("utf-8", errors="replace"))
            # The program may end (or be killed) before it has read all of itself.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await proc.stdin.drain()
            proc.stdin.close()
            with anyio.move_on_after(s.wall_seconds) as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pump, proc.stdout, out)
                    tg.start_soon(pump, proc.stderr, err)
                await proc.wait()
            if scope.cancelled_caught:
                limit = limit or "wall_time"
        finally:
            _kill(proc)
            with anyio.CancelScope(shield=True):
                await proc.wait()
        code_ = proc.returncode
        if limit is None and code_ in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            limit = "cpu_time"
        stderr = err.decode("utf-8", errors="replace")
        if limit is None and code_ != 0 and "MemoryError" in stderr:
            limit = "memory"
        return RunResult(
            stdout=out.decode("utf-8", errors="replace"),
            stderr=stderr,
            exit_code=None if limit in ("wall_time", "output") else code_,
            limit=limit,
            duration=time.monotonic() - started,
            sandbox=self.name,
        )

    async def aclose(self) -> None:
        return None


def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill bubblewrap's process group; its pid namespace (every process the code started)
    dies with its init, which `--die-with-parent` ties to bubblewrap."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
