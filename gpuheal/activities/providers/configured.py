"""The providers a worker runs with, built from the environment each SDK's standard chain reads.

Every cloud provider is cheap to build: clients and credentials are created on first use, so a
worker may enable them all and let each node's providerID pick one. Operators narrow the list
(`gpuheal worker --providers aws,manual`) to refuse repairs they do not expect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from gpuheal.activities.providers import RebootProvider
from gpuheal.activities.providers.aws import AwsProvider, AwsSettings
from gpuheal.activities.providers.azure import AzureProvider, AzureSettings
from gpuheal.activities.providers.gcp import GcpProvider, GcpSettings
from gpuheal.activities.providers.manual import ManualProvider
from gpuheal.activities.providers.nebius import NebiusProvider, NebiusSettings
from gpuheal.activities.providers.redfish import RedfishProvider, RedfishSettings

_BUILDERS: dict[str, Callable[[Mapping[str, str]], RebootProvider]] = {
    # A Redfish annotation is an explicit choice for a bare-metal node, so it is asked first.
    "redfish": lambda env: RedfishProvider(RedfishSettings.from_env(env)),
    "aws": lambda env: AwsProvider(AwsSettings.from_env(env)),
    "azure": lambda env: AzureProvider(AzureSettings.from_env(env)),
    "gcp": lambda env: GcpProvider(GcpSettings.from_env(env)),
    "nebius": lambda env: NebiusProvider(NebiusSettings.from_env(env)),
    "manual": lambda env: ManualProvider(),
}

# Every provider that needs no address of its own; the simulator's is added when one is given.
DEFAULT_PROVIDERS: tuple[str, ...] = tuple(_BUILDERS)


def build_providers(names: Iterable[str], env: Mapping[str, str]) -> list[RebootProvider]:
    """The named providers, in the order of DEFAULT_PROVIDERS. Raises ValueError for an unknown name."""
    wanted = set(names)
    unknown = wanted - set(_BUILDERS)
    if unknown:
        raise ValueError(f"unknown reboot provider(s) {', '.join(sorted(unknown))}; choose from {', '.join(_BUILDERS)}")
    return [build(env) for name, build in _BUILDERS.items() if name in wanted]
