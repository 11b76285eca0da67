"""`heavyresearch ask`: one Heavy job, in-process (memory backend) or on a running service."""

from __future__ import annotations

import argparse
import mimetypes
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
from pydantic import BaseModel, Field
from rich.console import Console

from workers.backend.base import Backend
from workers.commands.ask_limits import ask_problems, describe_refusal
from workers.commands.ask_logging import ask_log_level, route_logs
from workers.commands.progress import ProgressView, Shown, print_result, status_line
from workers.commands.result_line import Finished, result_line
from workers.engine import open_engine
from workers.errors import FileRejected
from workers.events import Event
from workers.files.store import check_upload, store_upload
from workers.jobs import submit_job
from workers.models import JobRecord, JobResult, JobStatus, ResearchRequest, Usage
from workers.settings import Settings


def ask(settings: Settings, args: argparse.Namespace) -> int:
    problems = ask_problems(settings, args, server_limits=not args.server)
    if problems:
        for line in problems:
            print(f"heavyresearch ask: {line}", file=sys.stderr)
        return 2
    request = ResearchRequest(
        query=args.question,
        agents=args.agents or settings.agent.default_agents,
        max_rounds=args.max_rounds or settings.agent.default_max_rounds,
        max_seconds=args.max_seconds,
        max_tokens=args.max_tokens,
        mode=getattr(args, "mode", "heavy"),
    )
    args.uploads = read_files(args.file, settings)
    args.console = output_console(args)
    route_logs(args.console, ask_log_level(args, settings.log_level))
    record: Shown
    if args.server:
        record = anyio.run(_remote, settings, request, args, backend_options={"use_uvloop": True})
    else:
        record = anyio.run(_local, settings, request, args, backend_options={"use_uvloop": True})
    return 0 if record.status == "succeeded" else 1


SIMULATED_NOTICE = "No LLM configured: running on the SIMULATED model (set HR_LLM__BASE_URL for a real one)."


def output_console(args: argparse.Namespace) -> Console:
    """The human output's console (stdout), or stderr's when stdout carries `--json` lines."""
    return Console(stderr=bool(args.json))


class _Output:
    def __init__(self, args: argparse.Namespace, console: Console, simulated: bool) -> None:
        self.as_json = bool(args.json)
        self.console = console
        live = not self.as_json and not args.quiet
        self.view = ProgressView(self.console, simulated) if live else None
        self.simulated = simulated

    def __enter__(self) -> _Output:
        if self.view is not None:
            self.view.__enter__()
        elif self.as_json and self.simulated:  # stdout is data: say it once, on stderr
            self.console.print(SIMULATED_NOTICE, style="bold yellow", markup=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.view is not None:
            self.view.__exit__(*exc)

    def event(self, event: Event) -> None:
        if self.as_json:
            sys.stdout.write(event.model_dump_json() + "\n")
            sys.stdout.flush()
        elif self.view is not None:
            self.view.handle(event)

    def result(self, record: Finished) -> None:
        if self.as_json:
            sys.stdout.write(result_line(record) + "\n")
            sys.stdout.flush()
        else:
            # The live view said "simulated" already; without one, the result says it.
            print_result(self.console, record, simulated_note=self.view is None)


Upload = tuple[str, str, bytes]  # (file name, content type, bytes)


def read_files(paths: list[str], settings: Settings) -> list[Upload]:
    """Each `--file`, read and checked before any job starts; exits 2 with a message when one
    cannot be read or would be refused."""
    out = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            Console(stderr=True).print(f"cannot read --file {path}: {exc.strerror or exc}")
            raise SystemExit(2) from None
        name, content_type = Path(path).name, mimetypes.guess_type(path)[0] or ""
        try:
            check_upload(settings.files, name=name, content_type=content_type, data=data)
        except FileRejected as exc:
            Console(stderr=True).print(f"--file {path} refused: {exc}")
            raise SystemExit(2) from None
        out.append((name, content_type, data))
    return out


async def _store_local(backend: Backend, settings: Settings, uploads: list[Upload]) -> list[str]:
    ids = []
    for name, content_type, data in uploads:
        record = await store_upload(backend, settings.files, name=name, content_type=content_type, data=data)
        ids.append(record.id)
    return ids


async def _upload_remote(client: httpx.AsyncClient, base: str, uploads: list[Upload]) -> list[str]:
    ids = []
    for name, content_type, data in uploads:
        files = {"file": (name, data, content_type or "application/octet-stream")}
        response = await client.post(f"{base}/v1/files", files=files)
        _check(response, f"--file {name}")
        ids.append(str(response.json()["id"]))
    return ids


async def _local(settings: Settings, request: ResearchRequest, args: argparse.Namespace) -> JobRecord:
    settings = settings.model_copy(update={"backend": "memory"})
    console: Console = args.console
    with status_line(console, "preparing the local corpus…", quiet=args.quiet) as status:

        def progress(done: int, total: int) -> None:
            status.update(f"building the local corpus: {done}/{total} documents")

        async with open_engine(settings, run_worker=True, on_corpus_progress=progress) as engine:
            status.stop()
            if args.uploads:
                ids = await _store_local(engine.backend, settings, args.uploads)
                request = request.model_copy(update={"files": ids})
            record, _ = await submit_job(engine.backend, request, simulated=engine.simulated)
            with _Output(args, console, engine.simulated) as out:
                after = 0
                done = False
                while not done:
                    for event in await engine.backend.wait_events(record.id, after, 5.0):
                        out.event(event)
                        after = event.seq
                        done = done or event.type.terminal
            final = await engine.backend.get_job(record.id)
            assert final is not None
    # Printed once the engine has shut down, so no line of its comes after the answer.
    out.result(final)
    return final


class RemoteJob(BaseModel):
    """The parts of the service's public job view (`GET /v1/research/{id}`) that are shown."""

    id: str
    status: JobStatus
    error: str | None = None
    result: JobResult | None = None
    usage: Usage = Field(default_factory=Usage)


class _Refused(Exception):
    """A one-line reason the service could not be used; printed instead of a traceback."""


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code == 401:
        raise _Refused(
            f"the service refused the API key ({_error_message(response)}); pass --api-key or HR_API_KEY"
        )
    if response.status_code == 422 and what == "the job":  # one reason per option
        raise _Refused("; ".join(describe_refusal(response.status_code, response.text)))
    if response.status_code >= 400:
        raise _Refused(f"the service refused {what}: HTTP {response.status_code}: {_error_message(response)}")


async def _sse_events(client: httpx.AsyncClient, url: str) -> AsyncIterator[Event]:
    async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
        if response.status_code >= 400:
            await response.aread()
        _check(response, "the event stream")
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                yield Event.model_validate_json(line[5:].strip())


async def _remote(settings: Settings, request: ResearchRequest, args: argparse.Namespace) -> RemoteJob:
    base = args.server.rstrip("/")
    key = args.api_key or os.environ.get("HR_API_KEY", "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None), headers=headers) as client:
            return await _follow_remote(client, base, request, args)
    except _Refused as exc:
        message = str(exc)
    except httpx.TransportError as exc:
        message = f"cannot reach the service at {base}: {str(exc) or type(exc).__name__}"
    # One plain line (not rich: it would wrap it), never a traceback.
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(2)


async def _follow_remote(
    client: httpx.AsyncClient, base: str, request: ResearchRequest, args: argparse.Namespace
) -> RemoteJob:
    if args.uploads:
        ids = await _upload_remote(client, base, args.uploads)
        request = request.model_copy(update={"files": ids})
    response = await client.post(f"{base}/v1/research", json=request.model_dump(exclude_none=True))
    _check(response, "the job")
    job = response.json()
    simulated = bool(job.get("simulated", False))
    with _Output(args, args.console, simulated) as out:
        async for event in _sse_events(client, f"{base}/v1/research/{job['id']}/events"):
            out.event(event)
            if event.type.terminal:
                break
        fetched = await client.get(f"{base}/v1/research/{job['id']}")
        _check(fetched, "the job view")
        final = RemoteJob.model_validate(fetched.json())
        out.result(final)
        return final
