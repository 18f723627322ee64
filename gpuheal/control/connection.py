"""Connecting to Temporal the way every Temporal tool does.

The address, namespace, TLS material and API key come from the standard environment settings
(`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_TLS_CLIENT_CERT_PATH`, `TEMPORAL_API_KEY`, …)
and the `temporal` CLI's config file profiles, so a worker and the CLI point at the same cluster as
`temporal` itself. Payloads are pydantic models, so every client uses the pydantic converter.
Clients run on the process's own runtime while one is current (`gpuheal.control.lifetime`).
"""

from __future__ import annotations

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from gpuheal.control.lifetime import current_runtime

DEFAULT_TASK_QUEUE = "gpuheal-remediation"
_NAMESPACE_NOT_FOUND = "temporal.api.errordetails.v1.NamespaceNotFoundFailure"


class TemporalUnreachable(RuntimeError):
    """No Temporal frontend answered at the address (a RuntimeError, as the SDK's own connect failure is)."""


class NamespaceNotFound(LookupError):
    """The Temporal server answered, but has no such namespace."""


async def connect_temporal(
    address: str | None = None, namespace: str | None = None, runtime: Runtime | None = None
) -> Client:
    """A client from the standard settings; `address` and `namespace` override them when given.

    Raises `TemporalUnreachable` when nothing answers at the address.
    """
    settings = ClientConfig.load_client_connect_config()
    settings.setdefault("target_host", "localhost:7233")
    if address:
        settings["target_host"] = address
    if namespace:
        settings["namespace"] = namespace
    try:
        return await Client.connect(
            **settings, data_converter=pydantic_data_converter, runtime=runtime or current_runtime()
        )
    except RuntimeError as error:  # the SDK's "Failed client connect: …"
        raise TemporalUnreachable(f"cannot reach Temporal at {settings['target_host']}: {error}") from error


async def check_namespace(client: Client) -> None:
    """Raise `NamespaceNotFound` unless the client's namespace exists on its server.

    A server that cannot describe namespaces (Temporal's Java test server) is taken at its word.
    """
    try:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=client.namespace))
    except RPCError as error:
        if is_namespace_not_found(error):
            raise NamespaceNotFound(f"Temporal has no namespace {client.namespace!r}") from error
        if error.status is not RPCStatusCode.UNIMPLEMENTED:
            raise


def is_namespace_not_found(error: RPCError) -> bool:
    """Whether a NOT_FOUND answer is about the namespace, not the workflow or whatever else was asked for."""
    if error.status is not RPCStatusCode.NOT_FOUND:
        return False
    return any(detail.type_url.endswith(_NAMESPACE_NOT_FOUND) for detail in error.grpc_status.details)
