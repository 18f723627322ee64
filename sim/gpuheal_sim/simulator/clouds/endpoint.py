"""What every simulated cloud shares: the context it serves in and the shape of an endpoint."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from aiohttp import web

from gpuheal_sim.simulator.clouds.faults import CloudFault, CloudFaults
from gpuheal_sim.simulator.jsonvalues import JsonDict, dig
from gpuheal_sim.simulator.tls import Certificates

if TYPE_CHECKING:
    from gpuheal_sim.simulator.simulation import Simulation


@dataclass
class CloudContext:
    """The simulation the clouds act on, where they are served and the faults they are told to answer with."""

    sim: Simulation
    faults: CloudFaults
    # The HTTPS listener's base URL, "https://127.0.0.1:<port>".
    url: str
    state_dir: Path
    certificates: Certificates
    _by_provider_id: dict[str, str] = field(default_factory=dict)

    def node_for(self, provider_id: str) -> str | None:
        """The simulated node whose `spec.providerID` is `provider_id`, if any (bare metal has none)."""
        if not provider_id:
            return None
        node = self._by_provider_id.get(provider_id)
        if node is not None and node in self.sim.lifecycle.nodes:
            return node
        self._by_provider_id = {
            str(dig(entry.obj, "spec", "providerID")): entry.name
            for entry in self.sim.store.objects("nodes")
            if dig(entry.obj, "spec", "providerID")
        }
        return self._by_provider_id.get(provider_id)

    def reboot(self, node: str) -> JsonDict:
        """Reboot the node as a cloud does: NotReady now, Ready with a new bootID later."""
        return self.sim.lifecycle.request_reboot(node)

    def terminate(self, node: str) -> JsonDict:
        """Terminate the node's machine as a cloud does: down for good, its Node deleted soon after."""
        return self.sim.lifecycle.terminate(node)

    async def hold_reply(self) -> None:
        """Keep a recorded reboot's answer back for `reboot_reply_seconds`, as a slow cloud does.

        Tests kill a worker in this window: the cloud has the request, the worker never heard back.
        """
        await asyncio.sleep(self.sim.config.reboot_reply_seconds)


class CloudEndpoint(ABC):
    """One simulated cloud: the identities it gives nodes, the routes it answers and how clients reach it."""

    name: ClassVar[str]

    def __init__(self, context: CloudContext) -> None:
        self.context = context

    @abstractmethod
    def provider_id(self, node: str, index: int) -> str:
        """The `spec.providerID` of the fleet's `index`th node when the fleet lives on this cloud."""

    def node_annotations(self, node: str) -> dict[str, str]:
        """Annotations the node carries on this cloud (bare metal names its BMC here)."""
        return {}

    @abstractmethod
    def add_routes(self, app: web.Application) -> None:
        """Register the cloud's HTTP routes on the simulator's HTTPS application."""

    def client_environment(self) -> dict[str, str]:
        """Environment under which the cloud's SDK, with its standard settings, reaches this endpoint."""
        return {}

    async def start(self) -> None:  # noqa: B027 - most clouds serve only on the HTTPS listener
        """Start anything served apart from the HTTPS listener (a gRPC port)."""

    async def stop(self) -> None:  # noqa: B027
        """Stop what `start` started."""

    def take_fault(self) -> CloudFault | None:
        """The fault the current request must answer with, if one was injected for this cloud."""
        return self.context.faults.take(self.name)
