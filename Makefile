# gpuheal: every target bootstraps .venv from python3 on a fresh machine (uv inside it, then the locked deps).
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
RUN := $(VENV)/bin
UV_VERSION := 0.13.8
PYTEST_ARGS ?=

.PHONY: all demo test lint bench fmt protos clean

all: test

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	touch $@

demo: $(VENV)/.synced
	$(RUN)/gpuheal demo $(DEMO_ARGS)

lint: $(VENV)/.synced
	$(RUN)/ruff check gpuheal tests bench
	$(RUN)/ruff format --check gpuheal tests bench
	$(RUN)/mypy --strict gpuheal tests bench
	$(RUN)/lint-imports

test: lint
	$(RUN)/pytest $(PYTEST_ARGS)

# Bytecode is compiled first: Temporal's workflow sandbox imports the workflow modules afresh for every
# workflow, and where PYTHONDONTWRITEBYTECODE is set that would mean compiling them every time.
bench: $(VENV)/.synced
	$(RUN)/python -m compileall -q gpuheal bench
	$(RUN)/python -m bench $(BENCH_ARGS)

protos: $(VENV)/.synced
	$(RUN)/python -m gpuheal.protos.build

fmt: $(VENV)/.synced
	$(RUN)/ruff format gpuheal tests bench
	$(RUN)/ruff check --fix gpuheal tests bench

clean:
	rm -rf $(VENV) .state .mypy_cache .ruff_cache .pytest_cache
