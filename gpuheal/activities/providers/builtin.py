"""gpuheal's own reboot providers, as registered in its pyproject.toml (`gpuheal.providers`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from gpuheal.activities.providers import RebootProvider
from gpuheal.activities.providers.registration import OwnsBy, Registration

if TYPE_CHECKING:
    import aiohttp


# Each builder imports its provider (and so its cloud SDK) only when it runs: the SDKs take seconds
# to import (azure-mgmt-compute alone about 2 s), and a worker pays only for the providers it runs.
def _redfish(env: Mapping[str, str], session: aiohttp.ClientSession | None) -> RebootProvider:
    from gpuheal.activities.providers.redfish import RedfishProvider, RedfishSettings

    return RedfishProvider(RedfishSettings.from_env(env))


def _aws(env: Mapping[str, str], session: aiohttp.ClientSession | None) -> RebootProvider:
    from gpuheal.activities.providers.aws import AwsProvider, AwsSettings

    return AwsProvider(AwsSettings.from_env(env))


def _azure(env: Mapping[str, str], session: aiohttp.ClientSession | None) -> RebootProvider:
    from gpuheal.activities.providers.azure import AzureProvider, AzureSettings

    return AzureProvider(AzureSettings.from_env(env))


def _gcp(env: Mapping[str, str], session: aiohttp.ClientSession | None) -> RebootProvider:
    from gpuheal.activities.providers.gcp import GcpProvider, GcpSettings

    return GcpProvider(GcpSettings.from_env(env))


def _nebius(env: Mapping[str, str], session: aiohttp.ClientSession | None) -> RebootProvider:
    from gpuheal.activities.providers.nebius import NebiusProvider, NebiusSettings

    return NebiusProvider(NebiusSettings.from_env(env))


def _manual(env: Mapping[str, str], session: aiohttp.ClientSession | None) -> RebootProvider:
    from gpuheal.activities.providers.manual import ManualProvider

    return ManualProvider()


REDFISH = Registration(_redfish, OwnsBy.ANNOTATION)
AWS = Registration(_aws, OwnsBy.PROVIDER_ID)
AZURE = Registration(_azure, OwnsBy.PROVIDER_ID)
GCP = Registration(_gcp, OwnsBy.PROVIDER_ID)
NEBIUS = Registration(_nebius, OwnsBy.PROVIDER_ID)
MANUAL = Registration(_manual, OwnsBy.POLICY)
