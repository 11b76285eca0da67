"""Real `heavyresearch` processes for the scale-out tests: API processes (`serve`) and engine
processes (`worker`) sharing one private redis-server, started the way an operator starts them.

Each process is `python -m workers.cli …` with its settings in the environment only
(`HR_BACKEND=redis`, `HR_REDIS_URL`, a key prefix of its own per test, the mini corpus, the
simulated model), writes its log to a file of its own, and can be stopped with SIGTERM or
killed with SIGKILL. `Cluster.report()` gathers the tail of every log for failure messages.

    cluster = Cluster(tmp_path, redis.url, corpus, sim.openai_base_url)
    api_a, api_b = cluster.start_apis(2)
    worker_a, worker_b = cluster.start_workers(2)
    …
    cluster.stop()
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.redis_server import free_port
from workers.llm.proxy import VARIABLES as PROXY_VARIABLES

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
# What `Worker.run` logs once it is claiming jobs; the id is the worker's consumer name.
WORKER_STARTED = re.compile(r"worker (\S+) started \(max \d+ jobs\)")


def clean_environ() -> dict[str, str]:
    """This process's environment without any `HR_…` setting or proxy (a developer's own must
    not leak: every test endpoint is on loopback)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("HR_") and name.lower() not in PROXY_VARIABLES
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


class HRProcess:
    """One `heavyresearch` subprocess with its log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError(f"{self.name} is already running")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", *self.args],
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    # -- logs -------------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def describe(self) -> str:
        state = "running" if self.alive else f"exited with {self.returncode}"
        return (
            f"--- {self.name} (pid {self.process.pid if self.process else '-'}, {state}) ---\n{self.tail()}"
        )

    def log_size(self) -> int:
        """How much has been logged so far: pass it as `since` to look only at what follows."""
        return len(self.log_text())

    def wait_log(
        self, pattern: re.Pattern[str] | str, timeout: float = START_TIMEOUT, *, since: int = 0
    ) -> re.Match[str]:
        """The first match of `pattern` in the log (past offset `since`), polling until it appears."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.log_text(), since)
            if found is not None:
                return found
            if not self.alive:
                raise RuntimeError(f"{self.name} exited before logging {regex.pattern!r}\n{self.describe()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} did not log {regex.pattern!r} in {timeout}s\n{self.describe()}"
                )
            time.sleep(0.05)

    # -- signals ----------------------------------------------------------------------------------
    def terminate(self) -> None:
        """SIGTERM: a worker drains, an API process shuts down gracefully."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """kill -9: no drain, no clean-up, nothing released."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        self.terminate()
        self.wait_or_kill(timeout)

    def wait_or_kill(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait for an exit already asked for (a second SIGTERM would cut a drain short)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class ApiProcess(HRProcess):
    """`heavyresearch serve` on a free loopback port."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        super().__init__(name, ["serve", "--host", "127.0.0.1", "--port", str(self.port)], env, log_path)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout: float = 30.0, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout), trust_env=False, **kwargs
        )

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, timeout=2.0, trust_env=False) as client:
            while True:
                if not self.alive:
                    raise RuntimeError(f"{self.name} exited during start-up\n{self.describe()}")
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not healthy after {timeout}s\n{self.describe()}")
                time.sleep(0.05)


class WorkerProcess(HRProcess):
    """`heavyresearch worker`; `worker_id` (its queue consumer name) is known once it is ready."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        super().__init__(name, ["worker"], env, log_path)
        self.worker_id: str | None = None

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        self.worker_id = self.wait_log(WORKER_STARTED, timeout).group(1)

    def jobs_run(self) -> set[str]:
        """Ids of the jobs this worker started or resumed (from its log)."""
        return set(re.findall(r"job=(\S+) agent=\S+ job running", self.log_text()))


class Cluster:
    """API and worker processes on one Redis, under a key prefix of their own.

    `heartbeat`/`lease` are short so a dead worker's jobs are reclaimed within seconds; `env`
    adds or overrides settings (`{"HR_WORKER__MAX_JOBS": "3"}`) for every process started later.
    """

    def __init__(
        self,
        workdir: Path,
        redis_url: str,
        corpus: Path,
        llm_base_url: str,
        *,
        prefix: str | None = None,
        heartbeat: float = 0.5,
        lease: float = 3.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis_url = redis_url
        self.prefix = prefix or f"hr-test-{uuid.uuid4().hex[:8]}"
        self.env = clean_environ()
        self.env.update(
            HR_BACKEND="redis",
            HR_REDIS_URL=redis_url,
            HR_REDIS_PREFIX=self.prefix,
            HR_CORPUS__PATH=str(corpus),
            HR_CORPUS__AUTO_BUILD="false",
            HR_LLM__BASE_URL=llm_base_url,
            HR_LLM__MODEL="heavyresearch-sim",
            HR_LLM__RETRY_BASE_DELAY="0.05",
            HR_LLM__RETRY_MAX_DELAY="0.5",
            HR_LLM__TIMEOUT="30",
            HR_WORKER__HEARTBEAT_SECONDS=str(heartbeat),
            HR_WORKER__LEASE_SECONDS=str(lease),
            HR_SERVER__SSE_KEEPALIVE="1",
            HR_LOG_LEVEL="INFO",
        )
        self.env.update(env or {})
        self.apis: list[ApiProcess] = []
        self.workers: list[WorkerProcess] = []

    @property
    def processes(self) -> list[HRProcess]:
        return [*self.apis, *self.workers]

    def _log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def start_apis(self, count: int) -> list[ApiProcess]:
        """Start `count` API processes together, and return once every one answers /healthz."""
        started = []
        for _ in range(count):
            name = f"api-{len(self.apis)}"
            api = ApiProcess(name, dict(self.env), self._log(name))
            self.apis.append(api)
            api.start()
            started.append(api)
        for api in started:
            api.wait_healthy()
        return started

    def start_workers(self, count: int) -> list[WorkerProcess]:
        """Start `count` worker processes together, and return once every one is claiming."""
        started = []
        for _ in range(count):
            name = f"worker-{len(self.workers)}"
            worker = WorkerProcess(name, dict(self.env), self._log(name))
            self.workers.append(worker)
            worker.start()
            started.append(worker)
        for worker in started:
            worker.wait_ready()
        return started

    def worker_by_id(self, worker_id: str) -> WorkerProcess | None:
        return next((w for w in self.workers if w.worker_id == worker_id), None)

    def stop(self) -> None:
        """SIGTERM every process at once, then wait (SIGKILL whatever outlives the timeout)."""
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            proc.wait_or_kill()

    def report(self) -> str:
        """The tail of every process's log, for failure messages."""
        return "\n".join(proc.describe() for proc in self.processes)
