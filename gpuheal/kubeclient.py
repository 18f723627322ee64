"""The Kubernetes connection every gpuheal component shares (worker activities, agents, tools).

It comes from a kubeconfig file (the simulator writes one), `$KUBECONFIG`, the in-cluster service
account, or `~/.kube/config`, in that order, and uses the official asyncio client.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes.aio import client, config


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
    return client.ApiClient(configuration)
