"""Where the node agent serves its gRPC contracts: one unix socket per service, in one directory.

The agent binds these names under its socket directory (`gpuheal agent --socket-dir`); the tools
and other monitors on the node dial them, so both take the names from here.
"""

from __future__ import annotations

from pathlib import Path

SOCKET_DIR = Path("/var/run/gpuheal")
DEVICE_API_SOCKET = "device-api.sock"
HEALTH_EVENTS_SOCKET = "health-events.sock"
TELEMETRY_SOCKET = "telemetry.sock"
