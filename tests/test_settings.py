"""Settings refuse mistakes at start: unknown keys, inconsistent values, role sections that would
be silently dropped. And `config/default.toml`, the documentation of every setting, states the
defaults the code has."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from workers.llm.endpoints import resolve_endpoints
from workers.settings import LLMSettings, Settings, config_dir

ROOT = Path(__file__).resolve().parents[1]
# Role sections document only what differs from [llm]; their other keys are [llm]'s.
ROLE_SECTIONS = {("llm", "synthesis"), ("llm", "summariser"), ("llm", "judge")}


def code_defaults(model: type[BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        value = field.get_default(call_default_factory=True)
        out[name] = value.model_dump() if isinstance(value, BaseModel) else value
    return out


def compare(toml: dict[str, Any], code: dict[str, Any], path: tuple[str, ...], problems: list[str]) -> None:
    for key in sorted(set(toml) | set(code)):
        where = ".".join((*path, key))
        if key not in code:
            problems.append(f"{where} is in default.toml but not a setting")
        elif key not in toml:
            if path not in ROLE_SECTIONS:
                problems.append(f"{where} is a setting that default.toml does not document")
        elif isinstance(toml[key], dict) and isinstance(code[key], dict):
            compare(toml[key], code[key], (*path, key), problems)
        elif toml[key] != code[key]:
            problems.append(f"{where}: default.toml says {toml[key]!r}, the code {code[key]!r}")


def test_default_toml_documents_every_setting_with_the_codes_default() -> None:
    toml = tomllib.loads((config_dir() / "default.toml").read_text())
    problems: list[str] = []
    compare(toml, code_defaults(Settings), (), problems)
    assert problems == []


def test_the_readme_documents_the_config_folder() -> None:
    assert "HR_CONFIG_DIR" in (ROOT / "README.md").read_text()


def settings_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    return str(raised.value)


def test_an_unknown_key_in_a_role_section_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, HR_LLM__SYNTHESIS__MODLE="big-model")
    assert "llm.synthesis.modle" in message
    assert "Extra inputs are not permitted" in message


def test_an_unknown_key_in_the_toml_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (config_dir() / "default.toml").read_text()
    (tmp_path / "default.toml").write_text(text.replace("[worker]\n", "[worker]\nmax_job = 3\n", 1))
    monkeypatch.setenv("HR_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ValidationError, match=r"worker\.max_job"):
        Settings()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HR_AGENT__DEFAULT_AGENTS": "12", "HR_AGENT__MAX_AGENTS": "8"}, "default_agents (12) is more than"),
        (
            {"HR_AGENT__DEFAULT_MAX_ROUNDS": "64", "HR_AGENT__MAX_ROUNDS_LIMIT": "32"},
            "default_max_rounds (64)",
        ),
        ({"HR_WORKER__HEARTBEAT_SECONDS": "30"}, "heartbeat_seconds (30) must be shorter than"),
        ({"HR_LLM__RETRY_BASE_DELAY": "30"}, "llm.retry_base_delay (30) is more than llm.retry_max_delay"),
        ({"HR_WEBHOOKS__RETRY_BASE_DELAY": "60"}, "webhooks.retry_base_delay (60)"),
        ({"HR_LLM__SYNTHESIS__API_KEY": "sk-1"}, "llm.synthesis sets api_key but no base_url"),
        ({"HR_LLM__SUMMARISER__TIMEOUT": "5"}, "llm.summariser sets timeout but no base_url"),
    ],
)
def test_inconsistent_settings_are_refused(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert expected in settings_error(monkeypatch, **env)


def test_a_role_model_without_a_base_url_runs_on_the_research_endpoint() -> None:
    llm = LLMSettings.model_validate(
        {"base_url": "http://127.0.0.1:9/v1", "api_key": "k", "model": "small", "synthesis": {"model": "big"}}
    )
    endpoints = resolve_endpoints(llm)
    synthesis = endpoints["synthesis"][0]
    assert (synthesis.base_url, synthesis.model, synthesis.settings.api_key) == (
        "http://127.0.0.1:9/v1",
        "big",
        "k",
    )
    assert endpoints["research"][0].model == "small"
    assert endpoints["summariser"][0].model == "small"


def test_the_cli_names_a_bad_setting_in_one_clean_message() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HR_")}
    env["HR_LLM__SYNTHESIS__MODLE"] = "x"
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "llm.synthesis.modle (HR_LLM__SYNTHESIS__MODLE): unknown setting" in done.stderr
