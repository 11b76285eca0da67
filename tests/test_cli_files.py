"""`heavyresearch ask --file PATH`: the agents read the file with parse_file, in-process and
through `--server` (uploaded with POST /v1/files first)."""

from __future__ import annotations

from pathlib import Path

from tests.sample_files import MARKER, SAMPLES
from tests.test_cli import json_output, run_cli


def parsed_previews(stdout: str) -> list[str]:
    events, _ = json_output(stdout)
    assert events[-1]["type"] == "job.succeeded", events[-1]
    return [
        e["data"]["preview"]
        for e in events
        if e["type"] == "tool.result" and e["data"]["name"] == "parse_file"
    ]


def sample(tmp_path: Path, kind: str) -> Path:
    name, _, data = SAMPLES[kind]
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_ask_file_in_process(tmp_path: Path, mini_corpus: Path) -> None:
    path = sample(tmp_path, "pptx")
    proc = run_cli(
        "ask",
        "What does the ledger deck say?",
        "--agents",
        "1",
        "--max-rounds",
        "5",
        "--json",
        "--file",
        str(path),
        env={"HR_CORPUS__PATH": str(mini_corpus)},
    )
    assert proc.returncode == 0, proc.stderr
    [preview, *_] = parsed_previews(proc.stdout)
    assert preview.startswith("[S1] ledger.pptx (PowerPoint deck,") and MARKER in preview


def test_ask_file_through_a_server(tmp_path: Path, mini_corpus: Path) -> None:
    from tests.server import api_settings, live_server

    path = sample(tmp_path, "md")
    with live_server(api_settings(mini_corpus)) as server:
        proc = run_cli(
            "ask",
            "What does the ledger say?",
            "--agents",
            "1",
            "--max-rounds",
            "5",
            "--json",
            "--server",
            server.base_url,
            "--file",
            str(path),
        )
    assert proc.returncode == 0, proc.stderr
    [preview, *_] = parsed_previews(proc.stdout)
    assert preview.startswith("[S1] ledger.md (Markdown,") and MARKER in preview


def test_ask_file_refuses_what_it_cannot_read(tmp_path: Path, mini_corpus: Path) -> None:
    missing = run_cli(
        "ask", "q", "--file", str(tmp_path / "nope.pdf"), env={"HR_CORPUS__PATH": str(mini_corpus)}
    )
    assert missing.returncode == 2 and "cannot read --file" in missing.stderr
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    refused = run_cli("ask", "q", "--file", str(image), env={"HR_CORPUS__PATH": str(mini_corpus)})
    assert refused.returncode == 2 and "unsupported file type" in refused.stderr
