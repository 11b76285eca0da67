"""The deployment files, checked by reading them (there is no Docker engine in the test run):
docker-compose.yml, the Dockerfile, .dockerignore and the env files in deploy/.

Every `heavyresearch …` command they run must parse with the real CLI parser, every `HR_…`
variable they set must name a real setting, and the values must validate as settings.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from workers.cli import _parser
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
TONGYI = "Alibaba-NLP/Tongyi-DeepResearch-30B-A3B"


# -- reading the files the way Docker does ----------------------------------------------------------


def env_file(path: Path) -> dict[str, str]:
    """A compose env file: KEY=VALUE lines, comments and blank lines skipped."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation (`${X}`, `${X:-default}`, `${X-default}`, `${X:+alt}`,
    `${X:?error}`, `$$`) applied to every string in a loaded compose file."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match["name"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        current = env.get(name)
        match op:
            case ":-":
                return current or arg
            case "-":
                return arg if current is None else current
            case ":+":
                return arg if current else ""
            case "+":
                return "" if current is None else arg
            case ":?" | "?":
                if not current if op == ":?" else current is None:
                    raise AssertionError(f"compose would stop: ${{{name}}} is required ({arg})")
                return current or ""
        return current or ""

    return _VARIABLE.sub(substitute, value)


def compose_model(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    resolved: dict[str, Any] = interpolate(loaded, env or {})
    return resolved


def service_env(service: dict[str, Any], dotenv: Mapping[str, str] | None = None) -> dict[str, str]:
    """A container's environment as Compose builds it: its `env_file`s in order (an optional
    one that is missing is skipped), then `environment`, which wins. A key without a value is
    taken from `dotenv` (the user's `.env`) and left out when that has none."""
    values: dict[str, str] = {}
    for entry in service.get("env_file", []):
        entry = {"path": entry} if isinstance(entry, str) else entry
        if entry["path"] == ".env":
            values.update(dotenv or {})
            continue
        path = ROOT / entry["path"]
        if not path.is_file():
            assert entry.get("required", True) is False, f"required env file {path} is missing"
            continue
        values.update(env_file(path))
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, None) for item in raw)
    for key, value in raw.items():
        if value is not None:
            values[key] = str(value)
        elif dotenv and key in dotenv:
            values[key] = dotenv[key]
        else:
            values.pop(key, None)
    return values


def profile_model(env_name: str | None, dotenv: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose model for `HEAVYRESEARCH_ENV_FILE=deploy/<env_name>` (None: the default)."""
    variables = dict(dotenv or {})
    if env_name is not None:
        variables["HEAVYRESEARCH_ENV_FILE"] = f"deploy/{env_name}"
    return compose_model(variables)


def setting_env_names(model: type[BaseModel] = Settings, prefix: str = "HR_") -> set[str]:
    """Every environment variable a setting answers to (`HR_LLM__BASE_URL`, …), nested too."""
    names = set()
    for name, field in model.model_fields.items():
        env = prefix + name.upper()
        names.add(env)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= setting_env_names(annotation, env + "__")
    return names


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process started with `env` would get."""
    for name, value in env.items():
        if name.startswith("HR_"):
            monkeypatch.setenv(name, value)
    return Settings()


def parses_as_cli(args: list[str]) -> str:
    """`heavyresearch ARGS…` is a real command line; returns its subcommand."""
    assert args and args[0] == "heavyresearch", args
    try:
        namespace = _parser().parse_args(args[1:])
    except SystemExit as exc:  # argparse exits on an unknown command or option
        raise AssertionError(f"not a valid heavyresearch command line: {args}") from exc
    command: str = namespace.command
    return command


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    out = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        out.append((instruction.upper(), rest.strip()))
    return out


def stages() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(base image, stage name, instructions) per stage; ARG defaults substituted in FROM."""
    args: dict[str, str] = {}
    found: list[tuple[str, str, list[tuple[str, str]]]] = []
    for instruction, rest in dockerfile_instructions():
        if instruction == "ARG" and not found:
            name, _, default = rest.partition("=")
            args[name] = default
        elif instruction == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--")]
            image = interpolate(words[0], args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
            found.append((image, name, []))
        else:
            assert found, f"{instruction} before the first FROM"
            found[-1][2].append((instruction, rest))
    return found


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative) out of the build context: the last
    matching pattern wins, and a pattern that matches a folder matches what it holds."""
    excluded = False
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = (
            [*prefixes, *(p.split("/")[-1] for p in prefixes)] if pattern.startswith("**/") else prefixes
        )
        glob = pattern.removeprefix("**/")
        if any(fnmatch.fnmatchcase(candidate, glob) for candidate in candidates):
            excluded = not negate
    return excluded


# -- docker-compose.yml ----------------------------------------------------------------------------------


def test_compose_has_redis_with_aof_on_a_volume_and_a_healthcheck() -> None:
    compose = compose_model()
    redis = compose["services"]["redis"]
    assert redis["image"].split(":")[0] == "redis"
    assert redis["image"].split(":")[1].startswith("7")
    command = redis["command"] if isinstance(redis["command"], list) else shlex.split(redis["command"])
    assert command[command.index("--appendonly") + 1] == "yes"
    volume, _, target = redis["volumes"][0].partition(":")
    assert target == "/data"
    assert volume in compose["volumes"], "redis data must live on a named volume"
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_compose_api_and_worker_share_redis_and_the_worker_scales() -> None:
    compose = compose_model()
    services = compose["services"]
    for name in ("api", "worker"):
        service = services[name]
        env = service_env(service)
        assert env["HR_BACKEND"] == "redis"
        assert env["HR_REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "build" in service or "image" in service
    api = services["api"]
    assert api["ports"] == ["127.0.0.1:8000:8000"], "without being told, the API faces loopback only"
    told = compose_model({"HEAVYRESEARCH_BIND": "0.0.0.0", "HEAVYRESEARCH_PORT": "9000"})
    assert told["services"]["api"]["ports"] == ["0.0.0.0:9000:8000"]

    worker = services["worker"]
    assert parses_as_cli(worker["command"]) == "worker"
    assert "container_name" not in worker, "a fixed container name stops `--scale worker=N`"
    assert "ports" not in worker, "a fixed host port stops `--scale worker=N`"
    assert worker["deploy"]["replicas"] >= 2
    assert worker["stop_signal"] == "SIGTERM"
    assert "stop_grace_period" in worker
    # The image's health check probes the HTTP API, which a worker does not serve.
    assert worker["healthcheck"] == {"disable": True}
    assert "healthcheck" not in api  # the image's own applies


def test_every_heavyresearch_command_in_compose_is_real() -> None:
    commands = []
    for service in compose_model()["services"].values():
        for key in ("command", "entrypoint"):
            value = service.get(key)
            if value is None:
                continue
            words = value if isinstance(value, list) else shlex.split(value)
            if words and words[0] == "heavyresearch":
                commands.append(words)
    assert commands, "compose runs no heavyresearch command of its own"
    for words in commands:
        parses_as_cli(words)


def test_the_vllm_profile_serves_tongyi_on_a_gpu_and_the_service_points_at_it() -> None:
    compose = profile_model("vllm.env")
    vllm = compose["services"]["vllm"]
    assert vllm["profiles"] == ["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    command = [str(word) for word in vllm["command"]]
    assert command[command.index("--model") + 1] == TONGYI
    port = command[command.index("--port") + 1] if "--port" in command else "8000"
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    for name in ("api", "worker"):
        env = service_env(compose["services"][name])
        assert env["HR_LLM__BASE_URL"] == f"http://vllm:{port}/v1"
        served = (
            command[command.index("--served-model-name") + 1] if "--served-model-name" in command else TONGYI
        )
        assert env["HR_LLM__MODEL"] == served
        assert compose["services"][name]["depends_on"]["vllm"]["required"] is False


def test_the_searxng_profile_enables_json_and_the_agents_search_it(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = profile_model("searxng.env")
    searxng = compose["services"]["searxng"]
    assert searxng["profiles"] == ["searxng"]
    assert searxng["image"].startswith("searxng/searxng")
    mounts = {
        target.split(":")[0]: source for source, _, target in (v.partition(":") for v in searxng["volumes"])
    }
    settings_file = ROOT / mounts["/etc/searxng"] / "settings.yml"
    searx_settings = yaml.safe_load(settings_file.read_text())
    assert "json" in searx_settings["search"]["formats"]
    assert searx_settings["server"]["limiter"] is False  # no Valkey in this profile

    settings = settings_from(service_env(compose["services"]["worker"]), monkeypatch)
    assert "searxng" in settings.search.providers
    base = urlsplit(settings.search.searxng.base_url)
    assert (base.hostname, base.port) == ("searxng", 8080)
    assert compose["services"]["worker"]["depends_on"]["searxng"]["required"] is False


@pytest.mark.parametrize("env_name", [None, "vllm.env", "searxng.env"])
def test_every_hr_variable_is_a_real_setting_and_validates(
    env_name: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = setting_env_names()
    extra = env_file(DEPLOY / (env_name or "none.env"))
    unknown = {name for name in extra if name.startswith("HR_")} - known
    assert not unknown, f"{env_name} sets unknown settings: {unknown}"
    compose = profile_model(env_name)
    for name, service in compose["services"].items():
        env = service_env(service)
        unknown = {var for var in env if var.startswith("HR_")} - known
        assert not unknown, f"service {name} sets unknown settings: {unknown}"
    for name in ("api", "worker"):
        with monkeypatch.context() as patch:
            settings = settings_from(service_env(compose["services"][name]), patch)
        assert settings.backend == "redis"
        assert settings.simulated == (env_name != "vllm.env")


def test_compose_env_vars_in_the_dockerfile_are_real_settings() -> None:
    known = setting_env_names()
    for _, _, instructions in stages():
        for instruction, rest in instructions:
            if instruction == "ENV":
                for name in re.findall(r"\b(HR_[A-Z0-9_]+)=", rest):
                    assert name in known, f"the Dockerfile sets an unknown setting {name}"


# -- Dockerfile and .dockerignore ---------------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_runs_as_a_user_with_a_healthcheck() -> None:
    built = stages()
    named = [name for _, name, _ in built]
    assert len(built) >= 2 and "builder" in named
    runtime_image, _, runtime = built[-1]
    builder_image = next(image for image, name, _ in built if name == "builder")
    # The venv is copied across and points at the interpreter by path: same image both sides.
    assert runtime_image == builder_image
    assert runtime_image.startswith("python:3.11")

    instructions = dict(runtime)
    user = instructions["USER"].split(":")[0]
    assert user not in ("root", "0"), "the runtime stage must not run as root"
    assert "8000" in instructions["EXPOSE"].split()
    health = instructions["HEALTHCHECK"]
    assert "/healthz" in health
    probe = exec_form(health[health.index("CMD") + 3 :].strip())
    assert probe[:2] == ["python", "-c"]
    compile(probe[2], "<healthcheck>", "exec")
    assert parses_as_cli(exec_form(instructions["CMD"])) == "serve"
    assert exec_form(instructions["CMD"]) == ["heavyresearch", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "ENTRYPOINT" not in instructions
    # Nothing of the builder but what was copied: no uv in the runtime stage.
    assert not any("uv " in rest for instruction, rest in runtime if instruction == "RUN")


def test_dockerfile_installs_the_locked_dependencies_and_builds_the_corpus() -> None:
    builder = next(instr for _, name, instr in stages() if name == "builder")
    runs = [rest for instruction, rest in builder if instruction == "RUN"]
    syncs = [run for run in runs if "uv sync" in run]
    assert syncs and all("--frozen" in run and "--no-dev" in run for run in syncs)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for run in syncs:
        for extra in re.findall(r"--extra (\S+)", run):
            assert extra in extras
    corpus = [run for run in runs if "corpus build" in run]
    assert len(corpus) == 1
    words = shlex.split(corpus[0])
    words[0] = Path(words[0]).name  # /app/.venv/bin/heavyresearch
    assert parses_as_cli(words) == "corpus"
    # The image reads the corpus it built.
    env = " ".join(
        rest for _, _, instr in stages()[-1:] for instruction, rest in instr if instruction == "ENV"
    )
    out = words[words.index("--out") + 1]
    assert f"HR_CORPUS__PATH={out}" in env


def test_everything_the_dockerfile_copies_is_in_the_build_context() -> None:
    sources = []
    for _, _, instructions in stages():
        for instruction, rest in instructions:
            if instruction in ("COPY", "ADD") and "--from=" not in rest:
                words = [w for w in shlex.split(rest) if not w.startswith("--")]
                sources += words[:-1]
            if instruction == "RUN":
                sources += re.findall(r"--mount=type=bind,source=([^,\s]+)", rest)
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        assert not dockerignored(source.rstrip("/")), f".dockerignore leaves {source} out of the context"


def test_dockerignore_keeps_secrets_and_bulk_out() -> None:
    for path in (".env", ".git", ".venv", "tests", "bench", "app/__pycache__", "corpus.sqlite"):
        assert dockerignored(path), f"{path} would be sent to the Docker daemon"
    for path in ("app/main.py", "workers/cli.py", "config/default.toml", "uv.lock", "README.md"):
        assert not dockerignored(path)


def test_the_readme_deployment_section_names_real_settings_and_files() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deployment") :]
    section = section[: section.find("\n## ", 1)] if "\n## " in section[1:] else section
    assert "--scale worker=" in section
    unknown = set(re.findall(r"\b(HR_[A-Z0-9_]+[A-Z0-9])", section)) - setting_env_names()
    assert not unknown, f"the README names unknown settings: {unknown}"
    for path in re.findall(r"`((?:deploy|bench|tests)/[\w./-]+)`", section):
        assert (ROOT / path).exists(), f"the README names {path}, which does not exist"
    env_files = set(re.findall(r"HEAVYRESEARCH_ENV_FILE=([\w./-]+)", section))
    assert {"deploy/vllm.env", "deploy/searxng.env"} <= env_files
    assert all((ROOT / path).is_file() for path in env_files - {"deploy/local.env"})
    assert "--env-file" not in section, "an --env-file replaces the user's .env"


def test_a_profile_adds_to_the_users_env_instead_of_replacing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = {
        "HR_LLM__API_KEY": "sk-mine",
        "HR_SERVER__API_KEYS": '["k1"]',
        "HR_AGENT__DEFAULT_AGENTS": "8",
        "HR_SEARCH__PROVIDERS": '["local"]',
    }
    compose = profile_model("searxng.env", dotenv)
    for name in ("api", "worker"):
        env = service_env(compose["services"][name], dotenv)
        with monkeypatch.context() as patch:
            settings = settings_from(env, patch)
        # The user's own settings stay, the profile's are added, the layout's are fixed.
        assert settings.llm.api_key == "sk-mine"
        assert settings.server.api_keys == ["k1"]
        assert settings.agent.default_agents == 8
        assert settings.search.providers == ["searxng", "local"]
        assert settings.backend == "redis"


def test_no_secret_in_compose_has_a_known_default() -> None:
    raw = COMPOSE.read_text()
    for name in re.findall(r"\$\{([A-Z_]*(?:SECRET|TOKEN|KEY)[A-Z_]*)", raw):
        assert re.search(rf"\$\{{{name}\}}|\$\{{{name}:-\}}", raw), f"{name} has a default in compose"
    searxng = compose_model()["services"]["searxng"]
    assert "SEARXNG_SECRET" not in service_env(searxng), "unset, it must not reach the container at all"
    assert service_env(searxng, {"SEARXNG_SECRET": "s3"})["SEARXNG_SECRET"] == "s3"
    settings_file = yaml.safe_load((DEPLOY / "searxng" / "settings.yml").read_text())
    # SearXNG's own placeholder, which it refuses to start with.
    assert settings_file["server"]["secret_key"] == "ultrasecretkey"


def test_the_readme_python_examples_compile_and_are_formatted() -> None:
    """What users copy from the README is code `make lint` would pass (it only checks .py files)."""
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    assert blocks, "the README has no python example"
    for block in blocks:
        compile(block, "README.md", "exec")
        formatted = subprocess.run(
            [sys.executable, "-m", "ruff", "format", "--stdin-filename", "example.py", "-"],
            input=block,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
        assert formatted == block, f"ruff format would change this README example:\n{block}"
