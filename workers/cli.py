"""The `heavyresearch` command line: serve, worker, ask, corpus build, eval, sim-llm."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from workers import tracing
from workers.errors import TracingUnavailable
from workers.logs import setup_logging
from workers.settings import get_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heavyresearch", description="Heavy Mode deep research as a service."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API (on sqlite or memory, the engine too)")
    serve.add_argument("--host", default=None, help="bind address (default: settings, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default: settings, 8000)")

    worker = sub.add_parser("worker", help="run an engine process that claims jobs (sqlite or Redis)")
    worker.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port (default: off)"
    )
    worker.add_argument(
        "--metrics-host", default=None, help="address for --metrics-port (default: settings, 127.0.0.1)"
    )

    ask = sub.add_parser("ask", help="run one Heavy job and show live progress")
    ask.add_argument("question")
    ask.add_argument("--agents", type=int, default=None, help="parallel research agents (1-16)")
    ask.add_argument("--max-rounds", type=int, default=None, help="round limit per agent (1-256)")
    ask.add_argument("--max-seconds", type=float, default=None, help="time budget for the job")
    ask.add_argument("--max-tokens", type=int, default=None, help="token budget for the job")
    ask.add_argument(
        "--mode",
        choices=("heavy", "react"),
        default="heavy",
        help="heavy: IterResearch agents + synthesis (default); react: the released ReAct loop",
    )
    ask.add_argument(
        "--json",
        action="store_true",
        help="print every event as one JSON line, then the whole result as the last line",
    )
    loudness = ask.add_mutually_exclusive_group()
    loudness.add_argument(
        "--quiet", "-q", action="store_true", help="no live table and no log lines: only the answer"
    )
    loudness.add_argument("--verbose", "-v", action="store_true", help="show the engine's INFO log lines too")
    ask.add_argument("--server", default=None, help="submit to a running service at this URL")
    ask.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="PATH",
        help="a file for the agents to read with parse_file (PDF, DOCX, XLSX, CSV, PPTX, HTML, MD, "
        "TXT, JSON); repeat for more",
    )
    ask.add_argument(
        "--api-key", default=None, help="the service's API key for --server (default: $HR_API_KEY)"
    )

    corpus = sub.add_parser("corpus", help="manage the local search corpus")
    corpus_sub = corpus.add_subparsers(dest="corpus_command", required=True)
    build = corpus_sub.add_parser("build", help="index documents into one SQLite FTS5 file")
    build.add_argument("sources", nargs="*", type=Path, help="JSONL files or folders of .md/.txt/.html")
    build.add_argument(
        "--wiki", action="store_true", help="index the offline Wikipedia data (default with no sources)"
    )
    build.add_argument("--out", type=Path, default=None, help="output file (default: HR_CORPUS__PATH)")

    from workers.commands.eval_args import add_parser as add_eval_parser

    add_eval_parser(sub)

    sim = sub.add_parser("sim-llm", help="run the SIMULATED OpenAI-compatible model server")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8001)
    sim.add_argument("--latency", type=float, default=0.0, help="seconds before the first token")
    sim.add_argument("--tokens-per-second", type=float, default=0.0, help="0 = instant")
    sim.add_argument(
        "--fault-rate", type=float, default=0.0, help="share of calls that fail (429/500/malformed)"
    )
    sim.add_argument("--min-rounds", type=int, default=3, help="rounds before the policy answers")
    sim.add_argument("--seed", type=int, default=0)
    return parser


def describe_settings_error(exc: ValidationError) -> str:
    """One line per bad setting, named as in `default.toml` and as its environment variable."""
    lines = ["invalid settings:"]
    for error in exc.errors():
        path = [str(part) for part in error["loc"]]
        name = ".".join(path)
        message = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
        where = f"{name} (HR_{'__'.join(path).upper()})" if path else "settings"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"heavyresearch: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        tracing.require(settings.tracing)
    except TracingUnavailable as exc:
        print(f"heavyresearch: {exc}", file=sys.stderr)
        return 2
    match args.command:
        case "serve":
            from workers.commands.serve import serve

            return serve(settings, host=args.host, port=args.port)
        case "worker":
            from workers.commands.worker import run_worker

            return run_worker(settings, metrics_host=args.metrics_host, metrics_port=args.metrics_port)
        case "ask":
            from workers.commands.ask import ask

            return ask(settings, args)
        case "corpus":
            from workers.commands.corpus import build

            return build(settings, args.sources, wiki=args.wiki or not args.sources, out=args.out)
        case "eval":
            from workers.commands.eval import run_eval_command

            return run_eval_command(settings, args)
        case "sim-llm":
            from workers.sim.app import SimConfig
            from workers.sim.server import serve as serve_sim

            config = SimConfig(
                latency=args.latency,
                tokens_per_second=args.tokens_per_second,
                fault_rate=args.fault_rate,
                min_rounds=args.min_rounds,
                seed=args.seed,
            )
            logging.getLogger(__name__).warning("starting the SIMULATED model server (not a real LLM)")
            serve_sim(args.port, config, host=args.host)
            return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
