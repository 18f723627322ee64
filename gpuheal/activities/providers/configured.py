"""The providers a worker runs with: registered by name, built from the environment each SDK's standard chain reads.

Providers are found in the `gpuheal.providers` entry point group, the one list of their names:
gpuheal registers its own (`builtin`, listed in pyproject.toml), and a test bed registers more
(gpuheal-sim's simulator).

Every cloud provider is cheap to build: its SDK is imported only when it is enabled, and its clients
and credentials are created on first use, so a worker may enable them all and let each node's
providerID pick one. Operators narrow the list (`gpuheal worker --providers aws,manual`) to refuse
repairs they do not expect, and such a worker imports no other cloud's SDK.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from gpuheal.activities.providers import RebootProvider
from gpuheal.activities.providers.registration import Registration

if TYPE_CHECKING:
    import aiohttp

PROVIDERS_GROUP = "gpuheal.providers"


class UnknownProvider(ValueError):
    """A provider name that no installed distribution registers."""


def _registered() -> dict[str, Registration]:
    # gpuheal's own first, then those of other distributions (the test bed's), each by how they own nodes.
    loaded = [
        (entry.dist is None or entry.dist.name != "gpuheal", entry.name, entry.load())
        for entry in entry_points(group=PROVIDERS_GROUP)
    ]
    loaded.sort(key=lambda found: (found[0], found[2].owns_by, found[1]))
    return {name: registration for _, name, registration in loaded}


# Every registered provider; the simulator's stays off unless a simulator URL is given.
_REGISTERED = _registered()
DEFAULT_PROVIDERS: tuple[str, ...] = tuple(_REGISTERED)


def provider_names(names: Iterable[str]) -> tuple[str, ...]:
    """`names`, checked: raises UnknownProvider naming the choices for an unknown name or none at all."""
    chosen = tuple(names)
    unknown = [name for name in chosen if name not in DEFAULT_PROVIDERS]
    if unknown or not chosen:
        raise UnknownProvider(
            f"unknown provider(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(DEFAULT_PROVIDERS)}"
        )
    return chosen


def switched_on_by(variable: str) -> list[str]:
    """The installed providers that `variable` switches on (the simulator's URL: only with gpuheal-sim)."""
    return [name for name, registration in _REGISTERED.items() if registration.switched_on_by == variable]


def build_providers(
    names: Iterable[str], env: Mapping[str, str], session: aiohttp.ClientSession | None = None
) -> list[RebootProvider]:
    """The named providers that are configured, and those their variable switches on, in the order of
    DEFAULT_PROVIDERS. Raises UnknownProvider."""
    wanted = set(provider_names(names))
    built = [
        registration.build(env, session)
        for name, registration in _REGISTERED.items()
        if name in wanted or (registration.switched_on_by is not None and env.get(registration.switched_on_by))
    ]
    return [provider for provider in built if provider is not None]
