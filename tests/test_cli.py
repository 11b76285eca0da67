"""The `heavyresearch` command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import DATA


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def json_output(stdout: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`ask --json`'s lines: the events, then the whole result as the last line."""
    *events, result = (json.loads(line) for line in stdout.splitlines())
    assert result["type"] == "result", result
    return events, result


def test_corpus_build_from_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "c.sqlite"
    proc = run_cli("corpus", "build", str(DATA / "mini_corpus.jsonl"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "indexed 30 documents" in proc.stdout
    assert out.is_file()


def test_ask_json_runs_a_whole_job_on_the_simulated_model(mini_corpus: Path) -> None:
    proc = run_cli(
        "ask",
        "What is the capital of Valdoria?",
        "--agents",
        "3",
        "--max-rounds",
        "8",
        "--json",
        env={"HR_CORPUS__PATH": str(mini_corpus)},
    )
    assert proc.returncode == 0, proc.stderr
    events, result = json_output(proc.stdout)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "job.succeeded"
    assert events[-1]["data"]["simulated"] is True
    # The last line is the whole result: a script needs nothing else.
    assert result["job_id"] == events[0]["job_id"]
    assert result["status"] == "succeeded"
    assert result["answer"] and result["report"]
    assert result["sources"], result
    assert [s["id"] for s in result["sources"]] == list(range(1, len(result["sources"]) + 1))
    assert all(s["url"].startswith("https://") for s in result["sources"])
    assert "[1]" in result["answer"] + result["report"]
    assert result["answer"] == events[-1]["data"]["answer"]
    assert len(result["sources"]) == events[-1]["data"]["sources"]
    assert result["usage"]["total_tokens"] > 0
    assert isinstance(result["cut_short"], list)
    assert result["simulated"] is True
    assert {e["agent"] for e in events if e["type"] == "agent.finished"} == {0, 1, 2}
    # No LLM configured: it says so.
    assert "SIMULATED" in proc.stderr


def test_ask_human_output_shows_answer_and_numbered_sources(mini_corpus: Path) -> None:
    proc = run_cli(
        "ask",
        "What is the capital of Valdoria?",
        "--agents",
        "2",
        "--max-rounds",
        "6",
        env={"HR_CORPUS__PATH": str(mini_corpus), "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Answer" in proc.stdout
    assert "Sources:" in proc.stdout
    assert "[1] " in proc.stdout
    assert "SIMULATED MODEL" in proc.stdout


def test_unknown_command_fails_with_usage() -> None:
    proc = run_cli("frobnicate")
    assert proc.returncode == 2
    assert "usage:" in proc.stderr


def test_ask_server_submits_to_a_running_service(mini_corpus: Path) -> None:
    from tests.server import api_settings, live_server

    with live_server(api_settings(mini_corpus)) as server:
        proc = run_cli(
            "ask",
            "What is the capital of Valdoria?",
            "--agents",
            "2",
            "--max-rounds",
            "6",
            "--json",
            "--server",
            server.base_url,
        )
        assert proc.returncode == 0, proc.stderr
        events, _ = json_output(proc.stdout)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "job.succeeded"
        listed = httpx.get(f"{server.base_url}/v1/research", timeout=10).json()
        assert events[0]["job_id"] in [job["id"] for job in listed["items"]]


def test_ask_mode_react_runs_the_react_loop(mini_corpus: Path) -> None:
    proc = run_cli(
        "ask",
        "What is the capital of Valdoria?",
        "--mode",
        "react",
        "--agents",
        "2",
        "--max-rounds",
        "8",
        "--json",
        env={"HR_CORPUS__PATH": str(mini_corpus)},
    )
    assert proc.returncode == 0, proc.stderr
    events, _ = json_output(proc.stdout)
    assert events[0]["data"]["mode"] == "react"
    assert all(e["data"]["mode"] == "react" for e in events if e["type"] == "agent.started")
    assert events[-1]["type"] == "job.succeeded"
    assert run_cli("ask", "q", "--mode", "chain").returncode == 2


def test_ask_server_with_an_api_key_and_clean_errors(mini_corpus: Path) -> None:
    from tests.redis_server import free_port
    from tests.server import api_settings, live_server
    from tests.test_tenants import ALICE, TENANTS

    settings = api_settings(mini_corpus, server={"tenants": TENANTS})
    question = ["ask", "What is the capital of Valdoria?", "--agents", "1", "--max-rounds", "4"]
    with live_server(settings) as server:
        proc = run_cli(*question, "--server", server.base_url, "--api-key", ALICE)
        assert proc.returncode == 0, proc.stderr
        assert "Answer" in proc.stdout
        # The key may come from the environment too.
        proc = run_cli(*question, "--json", "--server", server.base_url, env={"HR_API_KEY": ALICE})
        assert proc.returncode == 0, proc.stderr
        events, result = json_output(proc.stdout)
        assert events[-1]["type"] == "job.succeeded" and result["status"] == "succeeded"
        assert result["answer"] == events[-1]["data"]["answer"]  # from the public job view

        refused = run_cli(*question, "--server", server.base_url, "--api-key", "wrong")
        assert refused.returncode == 2
        assert "refused the API key" in refused.stderr and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        missing = run_cli(*question, "--server", server.base_url)
        assert missing.returncode == 2 and "requires an API key" in missing.stderr

    down = run_cli(*question, "--server", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 2
    assert "cannot reach the service" in down.stderr and "Traceback" not in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


SERVING = r"serving on (\S+) \(web page /, API docs /docs\) with backend=(\w+), model=(.+)\n"


def test_serve_says_where_it_serves_also_on_the_in_process_simulated_model(
    mini_corpus: Path, tmp_path: Path
) -> None:
    from tests.procs import ApiProcess, clean_environ

    env = clean_environ() | {"HR_BACKEND": "memory", "HR_CORPUS__PATH": str(mini_corpus)}
    api = ApiProcess("serve", env, tmp_path / "serve.log")
    api.start()
    try:
        where = api.wait_log(SERVING)
        api.wait_healthy()
        log = api.log_text()
    finally:
        api.stop()
    assert where.group(1) == api.base_url
    assert where.group(2) == "memory"
    assert where.group(3).startswith("SIMULATED")
    assert "corpus=30 documents" in log
    # The in-process simulated model's own server says nothing of its start (it would name
    # another port) and does not mute the API's uvicorn lines.
    assert f"Uvicorn running on {api.base_url}" in log
    assert log.count("Uvicorn running on") == 1
    assert log.count("Application startup complete") == 1
