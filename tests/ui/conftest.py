"""The Temporal UI suite: the integration stack (tests/integration) on a dev server of its own that
serves the Web UI on 127.0.0.1, and Debian's chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from gpuheal_sim.demo.devserver import DevServer, start_dev_server
from tests.integration.conftest import make_stack

__all__ = ["make_stack"]

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that reaches out: no QUIC, sync, component updates or background fetches.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[DevServer]:
    """A dev server with its Web UI (the shared one runs headless); `make_stack` builds on it here."""
    server = await start_dev_server(ui=True)
    yield server
    await server.shutdown()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(timezone_id="UTC")
    yield await context.new_page()
    await context.close()
