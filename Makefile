# One entry for people and CI. `make run` serves on the embedded defaults; `make test` runs
# lint, type check and the whole test suite. Both install what they need first.
SHELL := /bin/bash
PY ?= python3
UV := $(PY) -m uv
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup system-deps run test lint typecheck pytest bench clean

$(BIN)/heavyresearch: pyproject.toml uv.lock
	@$(PY) -m uv --version >/dev/null 2>&1 || $(PY) -m pip install --quiet uv
	$(UV) sync --frozen --all-extras
	@touch $@

setup: $(BIN)/heavyresearch

# redis-server for the Redis tests (they start their own on a free port), Chromium for the
# web page test, bubblewrap for PythonInterpreter's embedded sandbox.
system-deps:
	@need=""; command -v redis-server >/dev/null || need="$$need redis-server"; \
	command -v chromium >/dev/null || need="$$need chromium"; \
	command -v bwrap >/dev/null || need="$$need bubblewrap"; \
	if [ -n "$$need" ]; then apt-get update && apt-get install -y --no-install-recommends $$need; fi

run: setup
	$(BIN)/heavyresearch serve

lint: setup
	$(BIN)/ruff check app workers tests bench
	$(BIN)/ruff format --check app workers tests bench

typecheck: setup
	$(BIN)/mypy

pytest: setup system-deps
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: setup
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
