"""The Kubernetes connection every gpuheal component shares (worker activities, agents, tools).

It comes from a kubeconfig file (the simulator writes one), `$KUBECONFIG`, the in-cluster service
account, or `~/.kube/config`, in that order, and uses the official asyncio client.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp.helpers import get_env_proxy_for_url
from kubernetes.aio import client, config
from yarl import URL


async def connect(kubeconfig: Path | None = None) -> client.ApiClient:
    """An API client from `kubeconfig`, `$KUBECONFIG`, the in-cluster service account or `~/.kube/config`."""
    configuration = client.Configuration()
    path = kubeconfig or (Path(os.environ["KUBECONFIG"]) if os.environ.get("KUBECONFIG") else None)
    if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path) if path else None, client_configuration=configuration, persist_config=False
        )
    _proxy_from_environment_once(configuration)
    return client.ApiClient(configuration)


def _proxy_from_environment_once(configuration: client.Configuration) -> None:
    """Take the environment's proxy for the API server (HTTPS_PROXY, NO_PROXY) now, not per request.

    The client's aiohttp session trusts the environment, so aiohttp looks the proxy (and a
    ~/.netrc) up again on every request, in two thread-pool hops: more than half of a node read's
    CPU (bench/kube_client.py). A process's environment does not change as it runs, so the lookup
    is made here once, by aiohttp's own rule, and the session no longer trusts the environment. A
    kubeconfig's `proxy-url` still comes first. A ~/.netrc entry for the API server is no longer
    read: aiohttp refused every request with a token beside it, and no API server has taken basic
    auth since 1.19.
    """
    configuration.client_session_kwargs = {"trust_env": False}
    if configuration.proxy:
        return
    try:
        proxy, auth = get_env_proxy_for_url(URL(configuration.host))
    except LookupError:  # none set, or NO_PROXY names the API server
        return
    configuration.proxy = str(proxy)
    if auth is not None:
        configuration.proxy_headers = {"Proxy-Authorization": auth.encode()}
