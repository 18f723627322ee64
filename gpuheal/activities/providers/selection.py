"""Which provider repairs a node: the one its providerID names, unless the policy forces one."""

from __future__ import annotations

from collections.abc import Iterable

from gpuheal.activities.providers import ProviderError, RebootProvider, RebootTarget

AUTO = "auto"


class ProviderSet:
    """The providers a worker is configured with, asked in order which one owns a node."""

    def __init__(self, providers: Iterable[RebootProvider]) -> None:
        self._providers = {provider.name: provider for provider in providers}

    @property
    def names(self) -> list[str]:
        return list(self._providers)

    def choose(self, target: RebootTarget, wanted: str) -> RebootProvider:
        """The provider named by `wanted`, or for "auto" the first that owns the node.

        Raises a non-retryable ProviderError naming the node, its providerID and the configured
        providers when there is none: a retry cannot change the node's identity.
        """
        configured = ", ".join(self._providers) or "none"
        if wanted != AUTO:
            provider = self._providers.get(wanted)
            if provider is None:
                raise ProviderError(
                    f"repair.provider {wanted!r} is not configured on this worker (configured: {configured})",
                    retryable=False,
                )
            return provider
        for provider in self._providers.values():
            if provider.owns(target):
                return provider
        raise ProviderError(
            f"no configured provider owns node {target.node} (providerID {target.provider_id!r}; "
            f"configured: {configured}); set repair.provider to choose one, or annotate a bare-metal node "
            "with its Redfish system",
            retryable=False,
        )
