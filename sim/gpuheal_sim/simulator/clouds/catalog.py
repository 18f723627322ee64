"""Every cloud the simulator plays, by the name `FleetConfig.cloud` and the providers use."""

from __future__ import annotations

from .arm import ArmEndpoint
from .ec2 import Ec2Endpoint
from .endpoint import CloudEndpoint
from .gce import GceEndpoint
from .nebius import NebiusEndpoint
from .redfish import RedfishEndpoint

ENDPOINTS: tuple[type[CloudEndpoint], ...] = (Ec2Endpoint, ArmEndpoint, GceEndpoint, NebiusEndpoint, RedfishEndpoint)
