"""`gpuheal inject`: inject an XID on a node through the injector's central API."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from gpuheal.commands.injector import token_file_option, token_from


@click.command()
@click.option("--node", required=True, help="The node whose GPU gets the XID.")
@click.option("--xid", required=True, type=click.IntRange(min=1), help="The XID to inject (79: fell off the bus).")
@click.option("--gpu", default=0, show_default=True, type=click.IntRange(min=0), help="The GPU's index on the node.")
@click.option(
    "--api",
    default="http://127.0.0.1:8080",
    show_default=True,
    envvar="GPUHEAL_INJECTOR_API",
    help="The injector API's URL (kubectl port-forward svc/<release>-gpuheal-injector-api 8080) [env GPUHEAL_INJECTOR_API].",
)
@token_file_option
def inject(node: str, xid: int, gpu: int, api: str, token_file: Path | None) -> None:
    """Inject XID --xid on GPU --gpu of --node; prints the fault id the injection goes by."""
    from gpuheal.tools.injector.client import InjectionFailed, inject_xid

    token = token_from(token_file).current()
    try:
        answer = asyncio.run(inject_xid(api, token, node, xid, gpu))
    except InjectionFailed as error:
        raise click.ClickException(str(error)) from None
    click.echo(answer["fault_id"])
