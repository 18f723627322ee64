"""`gpuheal search-attributes register`: gpuheal's search attributes in the Temporal namespace, before
any worker starts (the chart's post-install Job runs it)."""

from __future__ import annotations

import click

from gpuheal.cli import run_command, with_temporal_options


@click.group("search-attributes")
def search_attributes() -> None:
    """The search attributes every remediation carries (GpuhealNode, GpuhealPhase, …)."""


@search_attributes.command()
@with_temporal_options
def register(address: str | None, namespace: str | None) -> None:
    """Register those missing from the namespace, as a starting worker does; exit 0 once all are there.

    Where they cannot be registered or listed (a server that forbids it), it exits 1 naming what to
    register by hand.
    """
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
    from temporalio.service import RPCError

    from gpuheal.control.connection import check_namespace, connect_temporal
    from gpuheal.worker import SearchAttributesMissing, ensure_search_attributes
    from gpuheal.workflows import search_attributes as attrs

    async def missing_after_registering() -> list[str]:
        client = await connect_temporal(address, namespace)
        await check_namespace(client)
        await ensure_search_attributes(client)
        # The worker's registration only warns where it may not list them: confirm they are there.
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        return [key.name for key in attrs.ALL if key.name not in listed.custom_attributes]

    try:
        missing = run_command(missing_after_registering)
    except SearchAttributesMissing as error:
        raise click.ClickException(str(error)) from None
    except RPCError as error:
        raise click.ClickException(f"cannot confirm gpuheal's search attributes: {error.message}") from None
    if missing:
        raise click.ClickException(f"search attributes still missing: {', '.join(missing)}")
    click.echo(f"search attributes registered: {', '.join(key.name for key in attrs.ALL)}")
