"""`heavyresearch ask` refuses what the API refuses, with the allowed range, before any job runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import run_cli


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--agents", "0"], "--agents: 0 is out of range; allowed: 1 to 16"),
        (["--agents", "40"], "--agents: 40 is out of range; allowed: 1 to 16"),
        (["--max-rounds", "0"], "--max-rounds: 0 is out of range; allowed: 1 to 256"),
        (["--max-tokens", "10"], "--max-tokens: 10 is out of range; allowed: 1000 to 1000000000"),
    ],
)
def test_ask_refuses_out_of_range_options_with_the_range(options: list[str], expected: str) -> None:
    proc = run_cli("ask", "What is the capital of Valdoria?", *options, timeout=60)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert proc.stdout == ""  # no job ran


def test_ask_refuses_a_token_budget_too_small_for_the_agents_naming_the_least() -> None:
    proc = run_cli("ask", "q", "--agents", "4", "--max-tokens", "3000", timeout=60)
    assert proc.returncode == 2
    assert "--max-tokens: max_tokens 3000 is too small for 4 agent(s)" in proc.stderr
    assert "ask for at least" in proc.stderr


def test_ask_uses_the_servers_stricter_settings_like_the_api() -> None:
    proc = run_cli("ask", "q", "--agents", "10", env={"HR_AGENT__MAX_AGENTS": "8"}, timeout=60)
    assert proc.returncode == 2
    assert "--agents: 10 is out of range; allowed: 1 to 8" in proc.stderr


def test_ask_on_a_server_checks_the_public_bounds_before_sending() -> None:
    # Nothing listens on the address: the refusal comes before any connection is tried.
    proc = run_cli("ask", "q", "--agents", "0", "--server", "http://127.0.0.1:9", timeout=60)
    assert proc.returncode == 2
    assert "--agents: 0 is out of range; allowed: 1 to 16" in proc.stderr


def test_ask_on_a_server_reports_its_stricter_limits_per_option(mini_corpus: Path) -> None:
    from tests.server import api_settings, live_server

    settings = api_settings(mini_corpus, agent={"max_agents": 2, "default_agents": 2})
    with live_server(settings) as server:
        proc = run_cli("ask", "q", "--agents", "3", "--server", server.base_url, timeout=60)
    assert proc.returncode == 2
    assert "--agents: Input should be less than or equal to 2" in proc.stderr
