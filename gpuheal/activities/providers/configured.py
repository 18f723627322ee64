"""The providers a worker runs with, built from the environment each SDK's standard chain reads.

Every cloud provider is cheap to build: its SDK is imported only when it is enabled, and its clients
and credentials are created on first use, so a worker may enable them all and let each node's
providerID pick one. Operators narrow the list (`gpuheal worker --providers aws,manual`) to refuse
repairs they do not expect, and such a worker imports no other cloud's SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from gpuheal.activities.providers import RebootProvider


# Each builder imports its provider (and so its cloud SDK) only when it runs: the SDKs take seconds
# to import (azure-mgmt-compute alone about 2 s), and a worker pays only for the providers it runs.
def _redfish(env: Mapping[str, str]) -> RebootProvider:
    from gpuheal.activities.providers.redfish import RedfishProvider, RedfishSettings

    return RedfishProvider(RedfishSettings.from_env(env))


def _aws(env: Mapping[str, str]) -> RebootProvider:
    from gpuheal.activities.providers.aws import AwsProvider, AwsSettings

    return AwsProvider(AwsSettings.from_env(env))


def _azure(env: Mapping[str, str]) -> RebootProvider:
    from gpuheal.activities.providers.azure import AzureProvider, AzureSettings

    return AzureProvider(AzureSettings.from_env(env))


def _gcp(env: Mapping[str, str]) -> RebootProvider:
    from gpuheal.activities.providers.gcp import GcpProvider, GcpSettings

    return GcpProvider(GcpSettings.from_env(env))


def _nebius(env: Mapping[str, str]) -> RebootProvider:
    from gpuheal.activities.providers.nebius import NebiusProvider, NebiusSettings

    return NebiusProvider(NebiusSettings.from_env(env))


def _manual(env: Mapping[str, str]) -> RebootProvider:
    from gpuheal.activities.providers.manual import ManualProvider

    return ManualProvider()


_BUILDERS: dict[str, Callable[[Mapping[str, str]], RebootProvider]] = {
    # A Redfish annotation is an explicit choice for a bare-metal node, so it is asked first.
    "redfish": _redfish,
    "aws": _aws,
    "azure": _azure,
    "gcp": _gcp,
    "nebius": _nebius,
    "manual": _manual,
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
