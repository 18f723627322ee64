"""`gpuheal injector agent` and `gpuheal injector api`: the XID fault injector's two servers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import click

from gpuheal.address import parse_listen_address
from gpuheal.cli import BadSetting, kubeconfig_option
from gpuheal.shutdown import shutdown_requested
from gpuheal.tools.injector.agent import AGENT_PORT, InjectorAgentSettings, running_agent
from gpuheal.tools.injector.api import API_PORT, InjectorApiSettings, running_api
from gpuheal.tools.injector.auth import TOKEN_FILE_ENV, MissingToken, Token
from gpuheal.tools.injector.gpus import DEFAULT_ROOT
from gpuheal.tools.injector.kmsg import DEFAULT_KMSG
from gpuheal.tools.injector.locate import DEFAULT_SELECTOR
from gpuheal.tools.injector.serving import ListenError

F = TypeVar("F", bound=Callable[..., Any])

token_file_option = click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=TOKEN_FILE_ENV,
    help=f"File holding the bearer token callers must present (a mounted Secret) [env {TOKEN_FILE_ENV}; "
    "else the token itself in $GPUHEAL_INJECTOR_TOKEN].",
)


def _listen_option(port: int, envvar: str) -> Callable[[F], F]:
    return click.option(
        "--address",
        default=str(port),
        show_default=True,
        envvar=envvar,
        help=f"HOST:PORT or [IPV6]:PORT to serve on; *:PORT serves on every address (IPv4 and IPv6), "
        f"a bare PORT on 127.0.0.1 only [env {envvar}].",
    )


@click.group()
def injector() -> None:
    """The XID fault injector: the node agent that writes XIDs to /dev/kmsg, and the central API."""


@injector.command()
@_listen_option(AGENT_PORT, "GPUHEAL_INJECTOR_AGENT_ADDRESS")
@token_file_option
@click.option(
    "--kmsg",
    type=click.Path(path_type=Path),
    default=DEFAULT_KMSG,
    show_default=True,
    envvar="GPUHEAL_INJECTOR_KMSG",
    help="The kernel log device to write XID records to [env GPUHEAL_INJECTOR_KMSG].",
)
@click.option(
    "--gpus-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_ROOT,
    show_default=True,
    envvar="GPUHEAL_INJECTOR_GPUS_ROOT",
    help="The driver's GPU directory: <PCI address>/information per GPU [env GPUHEAL_INJECTOR_GPUS_ROOT].",
)
def agent(address: str, token_file: Path | None, kmsg: Path, gpus_root: Path) -> None:
    """Serve POST /inject-xid, GET /faults and GET /health on this node (privileged: it writes /dev/kmsg)."""
    host, port = _listen(address)
    settings = InjectorAgentSettings(token=token_from(token_file), host=host, port=port, kmsg=kmsg, gpus_root=gpus_root)
    _serve(_holding(running_agent(settings)))


@injector.command()
@_listen_option(API_PORT, "GPUHEAL_INJECTOR_API_ADDRESS")
@token_file_option
@click.option(
    "--agent-namespace",
    required=True,
    envvar="GPUHEAL_INJECTOR_AGENT_NAMESPACE",
    help="The namespace of the injector agents' pods [env GPUHEAL_INJECTOR_AGENT_NAMESPACE].",
)
@click.option(
    "--agent-selector",
    default=DEFAULT_SELECTOR,
    show_default=True,
    envvar="GPUHEAL_INJECTOR_AGENT_SELECTOR",
    help="Label selector of the injector agents' pods [env GPUHEAL_INJECTOR_AGENT_SELECTOR].",
)
@kubeconfig_option
def api(
    address: str, token_file: Path | None, agent_namespace: str, agent_selector: str, kubeconfig: Path | None
) -> None:
    """Serve POST /api/v1/faults/gpu/inject/xid-<n> and GET /api/v1/faults, routing to each node's agent."""
    host, port = _listen(address)
    settings = InjectorApiSettings(
        token=token_from(token_file),
        namespace=agent_namespace,
        selector=agent_selector,
        host=host,
        port=port,
        kubeconfig=kubeconfig,
    )
    _serve(_holding(running_api(settings)))


def _listen(address: str) -> tuple[str, int]:
    try:
        return parse_listen_address(address)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--address'") from None


def token_from(token_file: Path | None) -> Token:
    """The token of --token-file (followed as it changes) or the environment; a usage error naming
    where it was looked for and what is wrong with it."""
    try:
        return Token.load(token_file)
    except MissingToken as error:
        raise click.BadParameter(str(error), param_hint="'--token-file'") from None


async def _holding(server: AbstractAsyncContextManager[Any]) -> None:
    """Run `server` until SIGTERM or Ctrl-C."""
    stop = shutdown_requested()
    async with server:
        await stop.wait()


def _serve(main: Coroutine[Any, Any, None]) -> None:
    """Run a server's coroutine; an address it cannot listen on is a bad setting (exit 2)."""
    try:
        asyncio.run(main)
    except ListenError as error:
        raise BadSetting(f"--address: {error}") from None
