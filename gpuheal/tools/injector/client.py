"""Asking the central API for an injection: what `gpuheal inject` (and the demo) does."""

from __future__ import annotations

from typing import Any

import aiohttp

from gpuheal.tools.injector.exchange import NoReply, exchange

TIMEOUT = aiohttp.ClientTimeout(total=30)


class InjectionFailed(RuntimeError):
    """The API refused the injection or could not be reached; the message is its reason, and the
    fault id when the API had given the fault one (it may have been injected all the same)."""


async def inject_xid(api: str, token: str, node: str, xid: int, gpu: int) -> dict[str, Any]:
    """Inject `xid` on GPU `gpu` of `node` through the API at `api`; its answer (with the `fault_id`)."""
    url = f"{api.rstrip('/')}/api/v1/faults/gpu/inject/xid-{xid}"
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            reply = await exchange(session, "POST", url, token, {"node_name": node, "gpu_id": gpu})
    except NoReply as error:
        raise InjectionFailed(f"cannot reach the injector API at {api}: {error.reason}") from None
    if reply.body is None:
        raise InjectionFailed(f"the injector API at {api} answered {reply.status} without a JSON object")
    if reply.status != 200 or "fault_id" not in reply.body:
        reason = reply.body.get("error", reply.body)
        raise InjectionFailed(f"the injector API refused ({reply.status}): {reason}{_naming(reply.body)}")
    return reply.body


def _naming(answer: dict[str, Any]) -> str:
    """` (fault id X on node N)` when a refusal names the fault, so the caller can look it up."""
    if "fault_id" not in answer:
        return ""
    return f" (fault id {answer['fault_id']} on node {answer.get('node_name', '?')})"
