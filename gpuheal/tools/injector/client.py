"""Asking the central API for an injection: what `gpuheal inject` (and the demo) does."""

from __future__ import annotations

from typing import Any

import aiohttp

from gpuheal.tools.injector.auth import bearer

TIMEOUT = aiohttp.ClientTimeout(total=30)


class InjectionFailed(RuntimeError):
    """The API refused the injection or could not be reached; the message is its reason."""


async def inject_xid(api: str, token: str, node: str, xid: int, gpu: int) -> dict[str, Any]:
    """Inject `xid` on GPU `gpu` of `node` through the API at `api`; its answer (with the `fault_id`)."""
    url = f"{api.rstrip('/')}/api/v1/faults/gpu/inject/xid-{xid}"
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.post(url, json={"node_name": node, "gpu_id": gpu}, headers=bearer(token)) as response,
        ):
            answer = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as error:
        raise InjectionFailed(f"cannot reach the injector API at {api}: {type(error).__name__}: {error}") from None
    except ValueError:
        raise InjectionFailed(f"the injector API at {api} answered {response.status} without JSON") from None
    if response.status != 200 or not isinstance(answer, dict) or "fault_id" not in answer:
        reason = answer.get("error", answer) if isinstance(answer, dict) else answer
        raise InjectionFailed(f"the injector API refused ({response.status}): {reason}")
    return answer
