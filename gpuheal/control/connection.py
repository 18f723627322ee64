"""Connecting to Temporal the way every Temporal tool does.

The address, namespace, TLS material and API key come from the standard environment settings
(`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_TLS_CLIENT_CERT_PATH`, `TEMPORAL_API_KEY`, …)
and the `temporal` CLI's config file profiles, so a worker and the CLI point at the same cluster as
`temporal` itself. Payloads are pydantic models, so every client uses the pydantic converter.
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

DEFAULT_TASK_QUEUE = "gpuheal-remediation"


async def connect(address: str | None = None, namespace: str | None = None, runtime: Runtime | None = None) -> Client:
    """A client from the standard settings; `address` and `namespace` override them when given."""
    settings = ClientConfig.load_client_connect_config()
    settings.setdefault("target_host", "localhost:7233")
    if address:
        settings["target_host"] = address
    if namespace:
        settings["namespace"] = namespace
    return await Client.connect(**settings, data_converter=pydantic_data_converter, runtime=runtime)
