"""Whether the Kubernetes API answers the worker, asked once when the worker starts.

A worker whose kubeconfig points nowhere would otherwise poll Temporal as if all were well and find
out only inside a remediation, whose first activity would then fail and be retried for minutes. So
it reads a node before it takes work: the request every remediation step starts with, under the
same permission (`get nodes`), for a name no node has, so that a 404 proves the API server reached,
the credentials accepted and the permission granted. A refusal (401, 403) ends the start at once;
no answer is waited for up to a deadline, with a warning, and then ends the start too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import aiohttp
from kubernetes.aio import client as k8s
from kubernetes.aio.client.exceptions import ApiException

log = logging.getLogger("gpuheal.worker")

# A name no node has (node names are DNS subdomains, and gpuheal never creates one).
PROBE_NODE = "gpuheal-worker-start-check"
# The longest a single attempt may take; a server that accepts connections but never answers.
_ATTEMPT = 10.0
_PAUSE = 1.0


class KubernetesUnavailable(Exception):
    """The Kubernetes API did not answer, or refused the credentials it was given."""


async def wait_until_answering(api: k8s.ApiClient, wait: timedelta) -> None:
    """Return once the API server answers a node read; `KubernetesUnavailable` after `wait` without one."""
    server = api.configuration.host
    nodes = k8s.CoreV1Api(api)
    deadline = time.monotonic() + wait.total_seconds()
    warned = False
    while True:
        remaining = deadline - time.monotonic()
        try:
            await nodes.read_node(PROBE_NODE, _request_timeout=max(0.1, min(_ATTEMPT, remaining)))
            return
        except ApiException as error:
            if error.status in (401, 403):
                raise KubernetesUnavailable(
                    f"the Kubernetes API at {server} refused the worker: {error.status} {error.reason} "
                    f"on get nodes; check the credentials and the worker's RBAC"
                ) from None
            if error.status is not None and error.status < 500:
                return  # it answered (404: no such node, as expected)
            reason = f"{error.status} {error.reason}"
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            reason = str(error) or type(error).__name__
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KubernetesUnavailable(
                f"the Kubernetes API at {server} did not answer within {wait.total_seconds():g}s: {reason}"
            )
        if not warned:
            log.warning("the Kubernetes API at %s does not answer (%s); waiting up to %s", server, reason, wait)
            warned = True
        await asyncio.sleep(min(_PAUSE, remaining))
