"""`heavyresearch eval`, run as a user runs it (a subprocess) on the SIMULATED model: offline on
the embedded defaults, interrupted and resumed, against a running service, with bad lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DATA
from tests.procs import ROOT, clean_environ
from tests.test_cli import run_cli
from workers.eval.records import load_records
from workers.settings import config_dir
from workers.sim import SimConfig, SimServer

MINI = DATA / "eval_mini.jsonl"


def _records(outdir: Path, config: str, rollout: int) -> list[dict[str, Any]]:
    path = outdir / config / f"iter{rollout}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _verdicts(outdir: Path) -> dict[str, dict[str, Any]]:
    lines = (outdir / "judgements.jsonl").read_text().splitlines()
    return {v["key"]: v["verdict"] for v in map(json.loads, lines)}


def _sim_env(corpus: Path, sim: SimServer) -> dict[str, str]:
    """The eval subprocess on a shared simulated model, whose /sim/stats count every call."""
    return {
        "HR_CORPUS__PATH": str(corpus),
        "HR_LLM__BASE_URL": sim.openai_base_url,
        "HR_LLM__MODEL": "heavyresearch-sim",
        "COLUMNS": "200",
    }


def test_sim_plays_a_deterministic_labelled_judge() -> None:
    template = (config_dir() / "prompts" / "judge_browsecomp.md").read_text()
    with SimServer() as sim:
        for response, expected in (("It is Merrowgate [S1].", "yes"), ("It is Tessel.", "no")):
            prompt = template.replace("${question}", "Capital of Valdoria?")
            prompt = prompt.replace("${response}", response).replace("${correct_answer}", "Merrowgate")
            reply = httpx.post(
                f"{sim.openai_base_url}/chat/completions",
                json={"model": "heavyresearch-sim", "messages": [{"role": "user", "content": prompt}]},
                timeout=10,
            )
            assert reply.headers["x-simulated"] == "true"
            content = reply.json()["choices"][0]["message"]["content"]
            assert f"correct: {expected}" in content
            assert "Simulated judge" in content
        assert sim.stats.by_role["judge"] == 2


def test_offline_end_to_end_on_the_embedded_defaults(wiki_corpus: Path, tmp_path: Path) -> None:
    """No LLM configured, the bundled sample dataset, the Wikipedia corpus: the whole run, a
    sweep over agents, and the report with Pass@k recomputed here from the records."""
    out = tmp_path / "run"
    proc = run_cli(
        "eval",
        "--out",
        str(out),
        "--rollouts",
        "2",
        "--agents",
        "1,2",
        "--max-rounds",
        "8",
        "--no-progress",
        env={"HR_CORPUS__PATH": str(wiki_corpus), "COLUMNS": "200"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SIMULATED" in proc.stderr
    sample = [json.loads(line) for line in (config_dir() / "eval" / "sample.jsonl").read_text().splitlines()]
    verdicts = _verdicts(out)
    scores = {s["config"]: s for s in json.loads((out / "scores.json").read_text())}
    assert set(scores) == {"heavy-n1-r8", "heavy-n2-r8"}
    for config, agents in (("heavy-n1-r8", 1), ("heavy-n2-r8", 2)):
        right: dict[int, set[str]] = {}
        for rollout in (1, 2):
            records = _records(out, config, rollout)
            assert sorted(r["question"] for r in records) == sorted(s["question"] for s in sample)
            for r in records:
                assert r["error"] is None and r["status"] == "succeeded" and r["simulated"] is True
                assert r["agents"] == agents and len(r["reports"]) == agents
                assert r["messages"][1]["content"] == r["question"]
                assert r["job_id"].startswith("job_") and r["usage"]["total_tokens"] > 0
                assert r["rounds"] >= agents and r["tool_calls"] > 0 and r["timings"]["wall_seconds"] > 0
            # Every record has its cached verdict; none of it is made up by this test.
            judged = [v for v in verdicts.values() if v["simulated"]]
            assert judged and all(
                v["judge"].startswith("llm:heavyresearch-sim:judge_browsecomp@") for v in judged
            )
            right[rollout] = {
                r["id"]
                for r in records
                if any(v["correct"] and v["extracted"] == r["prediction"].strip() for v in verdicts.values())
            }
        q = len(sample)
        assert scores[config]["per_rollout"] == {"1": len(right[1]) / q, "2": len(right[2]) / q}
        assert scores[config]["avg_pass_at_k"] == pytest.approx((len(right[1]) + len(right[2])) / (2 * q))
        assert scores[config]["best_pass_at_1"] == max(len(right[1]), len(right[2])) / q
        assert scores[config]["pass_at_k"] == len(right[1] | right[2]) / q
        assert 0 < scores[config]["pass_at_k"] < 1  # the sample has questions the sim gets wrong
    report = (out / "report.md").read_text()
    assert "| heavy-n1-r8 | 12 | 2 |" in report and "SIMULATED" in report
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Avg Pass@k" in proc.stdout and "Best Pass@1" in proc.stdout

    again = run_cli("eval", "report", str(out), env={"COLUMNS": "200"})
    assert again.returncode == 0, again.stderr
    assert "heavy-n2-r8" in again.stdout


def test_an_interrupted_run_resumes_without_researching_or_judging_twice(
    mini_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["eval", str(MINI), "--out", str(out), "--rollouts", "3", "--agents", "2", "--max-rounds", "6"]
    args += ["--concurrency", "2", "--no-progress"]
    # Latency makes each rollout take long enough that the kill lands midway.
    with SimServer(SimConfig(latency=0.05)) as sim:
        env = {**clean_environ(), **_sim_env(mini_corpus, sim)}
        with (tmp_path / "first.log").open("wb") as log:
            first = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", *args], env=env, cwd=ROOT, stdout=log, stderr=log
            )
        try:
            deadline = time.monotonic() + 120
            while sum(len(load_records(out / "heavy-n2-r6" / f"iter{r}.jsonl")) for r in (1, 2, 3)) < 4:
                assert first.poll() is None, (tmp_path / "first.log").read_text()
                assert time.monotonic() < deadline, "the first run recorded nothing"
                time.sleep(0.05)
            os.kill(first.pid, signal.SIGKILL)
        finally:
            first.wait(timeout=30)
        done_before = {
            (r, item) for r in (1, 2, 3) for item in load_records(out / "heavy-n2-r6" / f"iter{r}.jsonl")
        }
        assert 4 <= len(done_before) < 12, "the kill should land midway"
        # A judge call cut short by the kill gave no verdict; what the first run got is cached.
        judge_calls_before, verdicts_before = sim.stats.by_role["judge"], len(_verdicts(out))

        second = run_cli(*args, env=_sim_env(mini_corpus, sim), timeout=300)
        assert second.returncode == 0, second.stderr
        assert (
            f"12 rollouts: {12 - len(done_before)} researched now, {len(done_before)} finished earlier"
            in (second.stderr)
        )
        job_ids = []
        for rollout in (1, 2, 3):
            records = _records(out, "heavy-n2-r6", rollout)
            # One record per question and rollout: nothing researched twice.
            assert sorted(r["id"] for r in records) == sorted({r["id"] for r in records})
            assert len(records) == 4 and all(r["error"] is None for r in records)
            job_ids += [r["job_id"] for r in records]
        assert len(set(job_ids)) == 12
        # The second run asked the judge only for verdicts the first had not got, once each
        # (rollouts with the same prediction share one call).
        verdicts = _verdicts(out)
        judged_now = sim.stats.by_role["judge"] - judge_calls_before
        assert judged_now == len(verdicts) - verdicts_before
        assert f"{judged_now} judged now" in second.stderr
        lines = (out / "judgements.jsonl").read_text().splitlines()
        assert len(lines) == len(verdicts)
        judge_calls = sim.stats.by_role["judge"]

        third = run_cli(*args, env=_sim_env(mini_corpus, sim), timeout=120)
        assert third.returncode == 0, third.stderr
        assert "0 researched now, 12 finished earlier, 0 failed; 0 judged now" in third.stderr
        assert sim.stats.by_role["judge"] == judge_calls


def test_a_bad_dataset_line_is_named_and_the_run_goes_on(mini_corpus: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "d.jsonl"
    good = MINI.read_text().splitlines()
    dataset.write_text("\n".join([good[0], "{oops", good[1], '{"question": "no answer?"}']) + "\n")
    out = tmp_path / "run"
    proc = run_cli(
        "eval", str(dataset), "--out", str(out), "--rollouts", "1", "--agents", "1", "--max-rounds", "2",
        "--scorer", "normalized", "--no-progress",
        env={"HR_CORPUS__PATH": str(mini_corpus), "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"{dataset} line 2: not JSON" in proc.stderr
    assert f"{dataset} line 4: no 'answer'" in proc.stderr
    records = _records(out, "heavy-n1-r2", 1)
    assert sorted(r["question"] for r in records) == sorted(json.loads(line)["question"] for line in good[:2])
    assert json.loads((out / "run.json").read_text())["scorer"] == "normalized"
    # Two rounds are fewer than the simulated agents need: every answer is a forced one.
    assert all(r["forced_answers"] == 1 and r["termination"].startswith("forced answer") for r in records)
    (scores,) = json.loads((out / "scores.json").read_text())
    assert scores["forced_share"] == 1.0 and scores["format_recovery_share"] == 0.0


def test_eval_through_a_running_service_with_an_api_key(mini_corpus: Path, tmp_path: Path) -> None:
    from tests.server import api_settings, live_server

    (tmp_path / "notes.txt").write_text("Merrowgate is the capital.")
    rows = [json.loads(line) for line in MINI.read_text().splitlines()]
    rows[0]["file"] = "notes.txt"  # an attachment column: checked, named, passed in metadata
    dataset = tmp_path / "d.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    settings = api_settings(mini_corpus, server={"api_keys": ["sekret"]})
    headers = {"Authorization": "Bearer sekret"}
    with live_server(settings) as server:
        common = ["--server", server.base_url, "--rollouts", "2", "--agents", "2", "--max-rounds", "6"]
        keyed = [str(dataset), "--out", str(out), *common, "--api-key", "sekret", "--no-progress"]
        env = {"HR_CORPUS__PATH": str(mini_corpus), "COLUMNS": "200"}
        proc = run_cli("eval", *keyed, env=env)
        assert proc.returncode == 0, proc.stderr
        for rollout in (1, 2):
            for record in _records(out, "heavy-n2-r6", rollout):
                assert record["error"] is None and record["simulated"] is True
                job = httpx.get(
                    f"{server.base_url}/v1/research/{record['job_id']}", headers=headers, timeout=10
                )
                assert job.status_code == 200
                assert job.json()["request"]["query"].startswith(record["question"])
                assert job.json()["result"]["answer"] == record["prediction"]
                assert record["tool_calls"] > 0 and record["rounds"] >= 2
                if record["files"]:
                    assert job.json()["request"]["metadata"]["files"] == [str(tmp_path / "notes.txt")]
                    assert "Attached files: notes.txt" in job.json()["request"]["query"]
        assert "Avg Pass@k" in proc.stdout

        # Records lost after the jobs were submitted (as when a run is killed): the re-run's
        # Idempotency-Key picks up the same jobs instead of researching the questions again.
        before = {r["id"]: r["job_id"] for r in _records(out, "heavy-n2-r6", 1)}
        listed = httpx.get(f"{server.base_url}/v1/research?limit=100", headers=headers, timeout=10).json()
        (out / "heavy-n2-r6" / "iter1.jsonl").unlink()
        again = run_cli("eval", *keyed, env=env)
        assert again.returncode == 0, again.stderr
        assert {r["id"]: r["job_id"] for r in _records(out, "heavy-n2-r6", 1)} == before
        relisted = httpx.get(f"{server.base_url}/v1/research?limit=100", headers=headers, timeout=10).json()
        assert len(relisted["items"]) == len(listed["items"])

        # Without the key the service refuses every job: each is recorded as failed, the run ends.
        refused = run_cli(
            "eval", str(dataset), "--out", str(tmp_path / "refused"), *common, "--no-progress",
            env={"HR_CORPUS__PATH": str(mini_corpus)},
        )  # fmt: skip
        assert refused.returncode == 0, refused.stderr
        assert all("HTTP 401" in r["error"] for r in _records(tmp_path / "refused", "heavy-n2-r6", 1))

        # --mode react goes into the body as `mode`. A service without ReAct mode refuses the
        # field (422); one with it runs the job in that mode.
        react = run_cli(
            "eval", str(MINI), "--out", str(tmp_path / "react"), *common, "--api-key", "sekret",
            "--mode", "react", "--limit", "1", "--no-progress",
            env={"HR_CORPUS__PATH": str(mini_corpus)},
        )  # fmt: skip
        assert react.returncode == 0, react.stderr
        (record,) = _records(tmp_path / "react", "react-n2-r6", 1)
        if record["error"] is not None:
            assert "HTTP 422" in record["error"] and "mode" in record["error"]
        else:
            job = httpx.get(f"{server.base_url}/v1/research/{record['job_id']}", headers=headers, timeout=10)
            assert job.json()["request"]["mode"] == "react"
