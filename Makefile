# gpuheal: every target bootstraps .venv from python3 on a fresh machine (uv inside it, then the locked deps).
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
RUN := $(VENV)/bin
UV_VERSION := 0.13.8
PYTEST_ARGS ?=
# pytest-xdist processes for make test; each file's tests stay in one process (module fixtures).
PYTEST_WORKERS ?= 2

.PHONY: all demo test lint bench bytecode fmt protos image clean

all: test

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set, every process (each spawned
# worker, and Temporal's default build ID, which reads the code of every loaded module) would
# otherwise compile its imports from source.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet --compile-bytecode
	touch $@

demo: $(VENV)/.synced
	$(RUN)/gpuheal demo $(DEMO_ARGS)

lint: $(VENV)/.synced
	$(RUN)/ruff check gpuheal sim tests bench
	$(RUN)/ruff format --check gpuheal sim tests bench
	$(RUN)/mypy --strict gpuheal sim tests bench
	$(RUN)/lint-imports

# The suite waits on real servers, timers and spawned processes about half the time: two processes
# overlap those waits (each starts its own Temporal servers).
test: lint bytecode
	$(RUN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: bytecode
	$(RUN)/python -m bench $(BENCH_ARGS)

# The project's own bytecode, compiled before tests and benchmarks: Temporal's workflow sandbox imports
# the workflow modules afresh for every workflow, and where PYTHONDONTWRITEBYTECODE is set that would
# mean compiling them every time (and every spawned process compiling all of gpuheal).
bytecode: $(VENV)/.synced
	$(RUN)/python -m compileall -q gpuheal sim tests bench

protos: $(VENV)/.synced
	$(RUN)/python -m gpuheal.protos.build

fmt: $(VENV)/.synced
	$(RUN)/ruff format gpuheal sim tests bench
	$(RUN)/ruff check --fix gpuheal sim tests bench

# The image the chart deploys, built by podman or docker, whichever is here; not part of `make test`.
IMAGE ?= ghcr.io/gpuheal/gpuheal
CONTAINER_ENGINE ?= $(shell command -v podman || command -v docker)
# Read when a target uses it (make image, make -n image too): an empty tag is no image's.
VERSION = $(or $(shell $(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])'),$(error make image: $(PYTHON) could not read the project's version from pyproject.toml (it needs Python 3.11 or newer for tomllib: set PYTHON to one)))

# The commit built and its time (not the build's: the same commit labels the same), for the image's
# revision and created labels; outside a git checkout they are not passed and the Containerfile's
# defaults say so.
GIT ?= git
REVISION = $(shell $(GIT) rev-parse HEAD 2>/dev/null)
CREATED = $(shell $(GIT) log -1 --format=%cI HEAD 2>/dev/null)

image:
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image: neither podman nor docker is installed (or set CONTAINER_ENGINE)" >&2; exit 1; }
	$(CONTAINER_ENGINE) build -f Containerfile --build-arg UV_VERSION=$(UV_VERSION) --build-arg VERSION=$(VERSION) \
		$(if $(REVISION),--build-arg REVISION=$(REVISION)) $(if $(CREATED),--build-arg CREATED=$(CREATED)) \
		-t $(IMAGE):$(VERSION) .

clean:
	rm -rf $(VENV) .state .mypy_cache .ruff_cache .pytest_cache
