"""What a distribution registers in the `gpuheal.providers` entry point group: a `Registration`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from gpuheal.activities.providers import RebootProvider

if TYPE_CHECKING:
    import aiohttp

# Where the worker's `--simulator-url` reaches a provider that reboots simulated nodes.
SIMULATOR_URL_ENV = "GPUHEAL_SIMULATOR_URL"

# Builds a provider from the environment and the worker's HTTP session (for providers that speak HTTP
# themselves); None when what it needs is not configured, so it stays off.
ProviderBuilder = Callable[[Mapping[str, str], "aiohttp.ClientSession | None"], RebootProvider | None]


class OwnsBy(IntEnum):
    """How a provider recognises its nodes, which is the order providers are asked in (`repair.provider: auto`)."""

    # An explicit choice on the node (a bare-metal node's Redfish annotation) is asked first.
    ANNOTATION = 0
    PROVIDER_ID = 1
    # Never by itself: only when the policy names it (manual).
    POLICY = 2


@dataclass(frozen=True, slots=True)
class Registration:
    """What a `gpuheal.providers` entry point names."""

    build: ProviderBuilder
    owns_by: OwnsBy
    # An environment variable that turns the provider on whether or not `--providers` names it: the
    # address of what it reboots (the simulator's URL) is choice enough.
    switched_on_by: str | None = None
