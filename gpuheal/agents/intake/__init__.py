"""Health event intake: NVSentinel's PlatformConnector gRPC service on the agent's own unix socket."""

from gpuheal.agents.intake.server import DEFAULT_SOCKET, IntakeServer, IntakeSettings, PlatformConnectorService
from gpuheal.agents.intake.validate import IntakeLimits

__all__ = ["DEFAULT_SOCKET", "IntakeLimits", "IntakeServer", "IntakeSettings", "PlatformConnectorService"]
