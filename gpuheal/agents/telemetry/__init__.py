"""The agent's telemetry intake: DCGM readings from `gpuheal-telemetry` streamers on `telemetry.sock`.

`server` serves the socket, `intake` validates each reading, `store` keeps the latest value per GPU
and metric as Prometheus metrics, and `signals` turns DCGM's signs of failure into health events
for the agent's one event pipeline.
"""

from gpuheal.agents.telemetry.intake import TelemetryIntakeService
from gpuheal.agents.telemetry.server import TelemetryServer
from gpuheal.agents.telemetry.store import LatestMetrics, TelemetryCollector

__all__ = ["LatestMetrics", "TelemetryCollector", "TelemetryIntakeService", "TelemetryServer"]
