"""`gpuheal search-attributes register`, as the chart's post-install Job runs it, against the real dev server."""

from __future__ import annotations

import asyncio

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client

from gpuheal.workflows import search_attributes as attrs
from gpuheal_sim.demo.devserver import DevServer
from tests.test_cli import run_script
from tests.test_search_attributes import fresh_namespace


async def listed(client: Client) -> set[str]:
    answer = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return set(answer.custom_attributes)


async def register(dev_server: DevServer, namespace: str) -> tuple[int, str, str]:
    # In a thread: the dev server is served from this test's event loop.
    result = await asyncio.to_thread(
        run_script, "search-attributes", "register", "--address", dev_server.address, "--namespace", namespace
    )
    return result.returncode, result.stdout, result.stderr


async def test_it_registers_every_attribute_in_a_fresh_namespace_and_exits_0_again_once_there(
    dev_server: DevServer,
) -> None:
    client = await fresh_namespace(dev_server)
    names = {key.name for key in attrs.ALL}
    assert not names & await listed(client)

    for run in range(2):  # an upgrade runs it again over attributes already there
        code, out, err = await register(dev_server, client.namespace)

        assert code == 0, f"run {run}: {err}"
        assert "GpuhealPhaseSince" in out
        assert names <= await listed(client)


async def test_a_namespace_that_cannot_take_them_fails_the_job_naming_the_commands(dev_server: DevServer) -> None:
    """SQL visibility holds at most 3 KeywordList attributes per namespace; this one has used them up."""
    client = await fresh_namespace(dev_server)
    taken = {f"Other{i}": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST for i in range(3)}
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace=client.namespace, search_attributes=taken)
    )

    code, _, err = await register(dev_server, client.namespace)

    assert code == 1
    assert "Traceback" not in err
    assert f"temporal operator search-attribute create --namespace {client.namespace} --name GpuhealGpu " in err


async def test_an_unknown_namespace_is_refused_in_one_line(dev_server: DevServer) -> None:
    code, _, err = await register(dev_server, "no-such-namespace")

    assert code == 2 and "Traceback" not in err
    assert "'--namespace'" in err and "no-such-namespace" in err
