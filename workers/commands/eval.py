"""`heavyresearch eval [DATASET]` and `heavyresearch eval report OUTDIR`.

The run goes through the in-process engine (memory backend, its own worker) or, with
`--server`, a running service. Scores are printed at the end, as `eval report` prints them.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from workers.commands.eval_args import DEFAULT_MODE, SAMPLE_DATASET
from workers.engine import open_engine
from workers.errors import DatasetError, JudgeError
from workers.eval.chart import CHART_FILE, MISSING, available, sweep_axis, write_chart
from workers.eval.dataset import Dataset, load_dataset
from workers.eval.harness import EvalRun, Tally
from workers.eval.judge import ExactMatch, LLMJudge, NormalizedMatch, Scorer
from workers.eval.records import RunConfig
from workers.eval.report import (
    compute_scores,
    markdown_report,
    read_run,
    simulated_note,
    terminal_tables,
)
from workers.eval.research import LocalResearch, RemoteResearch, ResearchClient
from workers.llm import OpenAIChatModel
from workers.models import ResearchRequest
from workers.settings import SIMULATED_MODEL_ID, EndpointSettings, LLMSettings, Settings, config_dir
from workers.sim.server import SimServer

log = logging.getLogger(__name__)


def sample_dataset() -> Path:
    return config_dir() / "eval" / "sample.jsonl"


def _ints(text: str | None, default: int, name: str) -> list[int]:
    if text is None:
        return [default]
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"heavyresearch eval: {name} takes integers, e.g. 1,2,4,8 (got {text!r})") from None
    if not values or min(values) < 1:
        raise SystemExit(f"heavyresearch eval: {name} must be positive integers (got {text!r})")
    return list(dict.fromkeys(values))


def run_eval_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.dataset == "report":
        if not args.outdir_arg:
            raise SystemExit("usage: heavyresearch eval report OUTDIR")
        return report(Path(args.outdir_arg), Console())
    console = Console(stderr=True)
    path = sample_dataset() if args.dataset == SAMPLE_DATASET else Path(args.dataset)
    try:
        dataset = load_dataset(path)
    except DatasetError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    for bad in dataset.bad:
        console.print(f"[red]{escape(str(path))} {escape(str(bad))}[/] (skipped)")
    if args.limit is not None:
        dataset.items = dataset.items[: args.limit]
    if not dataset.items:
        console.print(f"[red]error:[/] {escape(str(path))} has no usable question")
        return 2
    if not args.server and args.mode != DEFAULT_MODE and "mode" not in ResearchRequest.model_fields:
        console.print(
            f"[red]error:[/] the in-process engine has no --mode {args.mode} yet; "
            "run it on a service that has (--server URL)"
        )
        return 2
    if settings.log_level.upper() != "DEBUG":
        # One INFO line per job state would bury the progress bar; warnings still show.
        for name in ("workers", "matplotlib"):
            logging.getLogger(name).setLevel(logging.WARNING)
    outdir = args.out or Path("eval-runs") / path.stem
    configs = [
        RunConfig(args.mode, agents, rounds)
        for rounds in _ints(args.max_rounds, settings.agent.default_max_rounds, "--max-rounds")
        for agents in _ints(args.agents, settings.agent.default_agents, "--agents")
    ]
    concurrency = args.concurrency or settings.eval.concurrency
    rollouts = args.rollouts or settings.eval.rollouts
    tally = anyio.run(
        _run,
        settings,
        args,
        dataset,
        outdir,
        configs,
        rollouts,
        concurrency,
        console,
        backend_options={"use_uvloop": True},
    )
    console.print(
        f"{tally.total} rollouts: {tally.researched} researched now, {tally.skipped} finished earlier, "
        f"{tally.failed} failed; {tally.judged} judged now, {tally.cached} verdicts from the cache",
        markup=False,
    )
    report(outdir, Console())
    return 0


def _judge_endpoint(settings: Settings, sim_base_url: str | None) -> LLMSettings | None:
    """The judge's endpoint: its own, else the research one, else the simulated model."""
    endpoint: EndpointSettings
    if settings.llm.judge.base_url:
        endpoint = settings.llm.judge
        model = endpoint.model or settings.llm.model
    elif settings.llm.base_url:
        # A judge model of its own, served by the research endpoint, is allowed (as for roles).
        endpoint, model = settings.llm, settings.llm.judge.model or settings.llm.model
    elif sim_base_url:
        endpoint = EndpointSettings(base_url=sim_base_url, model=SIMULATED_MODEL_ID)
        model = SIMULATED_MODEL_ID
    else:
        return None
    fields = {name: getattr(endpoint, name) for name in EndpointSettings.model_fields}
    return LLMSettings(
        **{**fields, "model": model, "stream": False},
        retry_base_delay=settings.llm.retry_base_delay,
        retry_max_delay=settings.llm.retry_max_delay,
    )


@asynccontextmanager
async def _scorer(
    settings: Settings, args: argparse.Namespace, stack: AsyncExitStack, sim_base_url: str | None
) -> AsyncIterator[Scorer]:
    name = args.scorer or settings.eval.scorer
    if name == "exact":
        yield ExactMatch()
        return
    if name == "normalized":
        yield NormalizedMatch()
        return
    llm = _judge_endpoint(settings, sim_base_url)
    if llm is None:
        # No model anywhere (a remote run from a machine with nothing configured): the
        # simulated model judges, in this process.
        sim = await stack.enter_async_context(SimServer())
        llm = _judge_endpoint(settings, sim.openai_base_url)
        assert llm is not None
    model = await stack.enter_async_context(OpenAIChatModel.from_settings(llm))
    simulated = llm.model == SIMULATED_MODEL_ID
    if simulated:
        log.warning("the SIMULATED model is the judge: its verdicts are a containment rule, not an LLM's")
    yield LLMJudge(
        model,
        llm.model,
        args.judge_prompt or settings.eval.judge_prompt,
        attempts=settings.eval.judge_attempts,
        max_tokens=settings.eval.judge_max_tokens,
        simulated=simulated,
    )


@asynccontextmanager
async def _research(
    settings: Settings, args: argparse.Namespace, stack: AsyncExitStack, concurrency: int, console: Console
) -> AsyncIterator[tuple[ResearchClient, str | None]]:
    """The research client, and the simulated model's URL when the engine here runs one."""
    if args.server:
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        client = await stack.enter_async_context(
            httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30.0, read=None))
        )
        health = await client.get(f"{args.server.rstrip('/')}/healthz")
        simulated = health.status_code == 200 and bool(health.json().get("simulated"))
        yield RemoteResearch(client, args.server, simulated=simulated), None
        return
    local = settings.model_copy(
        update={
            "backend": "memory",
            "worker": settings.worker.model_copy(update={"max_jobs": max(concurrency, 1)}),
        }
    )
    engine = await stack.enter_async_context(open_engine(local, run_worker=True))
    if engine.simulated:
        console.print(
            "[bold yellow]Research runs on the SIMULATED model, not an LLM "
            "(set HR_LLM__BASE_URL and HR_LLM__MODEL for a real one).[/]"
        )
    sim_url = engine.llm_base_url if engine.simulated and not settings.llm.base_url else None
    yield LocalResearch(engine.backend, simulated=engine.simulated), sim_url


async def _run(
    settings: Settings,
    args: argparse.Namespace,
    dataset: Dataset,
    outdir: Path,
    configs: list[RunConfig],
    rollouts: int,
    concurrency: int,
    console: Console,
) -> Tally:
    async with AsyncExitStack() as stack:
        research, sim_url = await stack.enter_async_context(
            _research(settings, args, stack, concurrency, console)
        )
        try:
            scorer = await stack.enter_async_context(_scorer(settings, args, stack, sim_url))
        except JudgeError as exc:
            raise SystemExit(f"heavyresearch eval: {exc}") from None
        progress = Progress(
            TextColumn("[bold]eval[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("acc {task.fields[acc]}"),
            TextColumn("{task.fields[tokens]} tokens"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=args.no_progress,
        )
        task = progress.add_task("eval", total=None, acc="-", tokens=0)

        def on_progress(tally: Tally) -> None:
            acc = f"{100 * tally.correct / tally.scored:.1f}%" if tally.scored else "-"
            progress.update(task, total=tally.total, completed=tally.done, acc=acc, tokens=tally.tokens)

        run = EvalRun(
            dataset=dataset,
            outdir=outdir,
            configs=configs,
            rollouts=rollouts,
            research=research,
            scorer=scorer,
            concurrency=concurrency,
            max_seconds=args.max_seconds,
            on_progress=on_progress,
        )
        with progress:
            return await run.run()
    raise AssertionError("unreachable")


def report(outdir: Path, console: Console) -> int:
    try:
        run = read_run(outdir)
    except FileNotFoundError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    scores = compute_scores(outdir)
    simulated = bool(run.get("simulated")) or any(s.simulated or s.judge_simulated for s in scores)
    for table in terminal_tables(scores, f"Evaluation: {outdir}"):
        console.print(table)
    chart = None
    if sweep_axis(scores) is not None:
        if available():
            path = write_chart(scores, outdir, simulated)
            chart = path.name if path else None
            console.print(f"chart: {outdir / CHART_FILE}", markup=False)
        else:
            console.print(MISSING, markup=False)
    text = markdown_report(run, scores, chart)
    (outdir / "report.md").write_text(text, encoding="utf-8")
    (outdir / "scores.json").write_text(
        "[\n" + ",\n".join(s.model_dump_json() for s in scores) + "\n]\n", encoding="utf-8"
    )
    console.print(f"markdown: {outdir / 'report.md'}", markup=False)
    note = simulated_note(
        bool(run.get("simulated")) or any(s.simulated for s in scores), any(s.judge_simulated for s in scores)
    )
    if note:
        console.print(f"[bold yellow]{note}[/]")
    return 0
