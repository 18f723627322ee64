"""The worker registers gpuheal's search attributes, and refuses to start where they are missing and it
may not add them: every remediation's first workflow task would fail on them."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client

from gpuheal.worker import SearchAttributesMissing, ensure_search_attributes
from gpuheal.workflows import search_attributes as attrs
from gpuheal_sim.demo.devserver import DevServer


async def fresh_namespace(dev_server: DevServer) -> Client:
    namespace = f"sa-{uuid.uuid4().hex[:8]}"
    await dev_server.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=namespace, workflow_execution_retention_period=Duration(seconds=86400))
    )
    for _ in range(100):  # the namespace registry refreshes within a few seconds
        client = await Client.connect(dev_server.address, namespace=namespace)
        try:
            await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
            return client
        except Exception:
            await asyncio.sleep(0.1)
    raise AssertionError(f"namespace {namespace} never became usable")


async def test_a_fresh_namespace_gets_every_attribute(dev_server: DevServer) -> None:
    client = await fresh_namespace(dev_server)

    await ensure_search_attributes(client)

    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    assert {key.name for key in attrs.ALL} <= set(listed.custom_attributes)


async def test_a_namespace_that_cannot_take_them_stops_the_worker_naming_the_commands(dev_server: DevServer) -> None:
    """SQL visibility holds at most 3 KeywordList attributes per namespace; this one has used them up."""
    client = await fresh_namespace(dev_server)
    taken = {f"Other{i}": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST for i in range(3)}
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace=client.namespace, search_attributes=taken)
    )

    with pytest.raises(SearchAttributesMissing) as missing:
        await ensure_search_attributes(client)

    message = str(missing.value)
    assert "cannot have more than 3 search attribute of type KeywordList" in message
    assert (
        f"temporal operator search-attribute create --namespace {client.namespace} --name GpuhealGpuSerial --type KeywordList"
        in message
    )
    assert "--name GpuhealRepairs --type Int" in message
