"""The simulator's provider: reboots (or terminates) a simulated node through the simulator's control API.

It plays the part a cloud API plays in production (`POST /sim/v1/nodes/<node>/reboot`), over HTTP,
so the repair activity runs the same code path against the simulator as against a real provider.
The worker finds it as the "simulator" entry point of `gpuheal.providers` (`REGISTRATION`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp

from gpuheal.activities.providers import ProviderError, RebootTarget
from gpuheal.activities.providers.refusal import refusing_status
from gpuheal.activities.providers.registration import SIMULATOR_URL_ENV, OwnsBy, Registration

# The providerID scheme of simulated nodes ("sim://<node>").
PROVIDER_ID_SCHEME = "sim://"


class SimulatorProvider:
    """Reboots nodes of a simulated fleet at `base_url`."""

    name = "simulator"
    expects_new_boot = True
    supports_graceful = False

    def __init__(self, base_url: str, session: aiohttp.ClientSession, *, timeout: float = 10.0) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._timeout = timeout

    def owns(self, target: RebootTarget) -> bool:
        return target.provider_id.startswith(PROVIDER_ID_SCHEME)

    async def reboot(self, target: RebootTarget) -> str:
        """Ask the simulator for the reboot.

        A ProviderError is `refused` when the simulator answered with an error or no connection was
        made; a request sent without an answer (a timeout, a dropped connection) may have been
        recorded, so it is not.
        """
        body = await self._call("POST", target.node, "/reboot", asking=True)
        return f"simulator accepted the reboot of {target.node} at {body.get('requestedAt', '?')}"

    async def replace(self, target: RebootTarget) -> str:
        """Terminate the node's machine; the simulator deletes the node soon after, as a cloud's node controller does."""
        body = await self._call("POST", target.node, "/terminate")
        again = " (already terminated)" if body.get("alreadyTerminated") else ""
        return f"simulator terminated the machine of {target.node} at {body.get('terminatedAt', '?')}{again}"

    async def requested_since(self, target: RebootTarget, since: datetime) -> bool | None:
        body = await self._call("GET", target.node, "")
        last = body.get("lastRebootRequestAt")
        return last is not None and datetime.fromisoformat(last) >= since

    async def describe(self, target: RebootTarget) -> str:
        body = await self._call("GET", target.node, "")
        state = "rebooting" if body.get("rebooting") else ("Ready" if body.get("ready") else "NotReady")
        return f"simulated node {target.node}: {state}, {body.get('rebootRequests', 0)} reboot request(s)"

    async def _call(self, method: str, node: str, suffix: str, *, asking: bool = False) -> dict[str, Any]:
        """One request; `asking`: it asks for a reboot, so its failures say whether it was refused."""
        url = f"{self._base}/sim/v1/nodes/{node}{suffix}"
        try:
            async with self._session.request(
                method, url, timeout=aiohttp.ClientTimeout(total=self._timeout)
            ) as response:
                if response.status == 404:
                    raise ProviderError(f"the simulator has no node {node}", retryable=False, refused=asking)
                if response.status >= 400:
                    raise ProviderError(
                        f"simulator answered {response.status} for {method} {url}",
                        retryable=response.status >= 500,
                        refused=asking and refusing_status(response.status),
                    )
                body: dict[str, Any] = await response.json()
                return body
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            # No connection was made, so nothing was sent.
            raise ProviderError(
                f"simulator unreachable at {self._base}: {error}", retryable=True, refused=asking
            ) from error
        except aiohttp.ClientError as error:
            # Sent, then the connection failed or the answer could not be read: it may have been recorded.
            raise ProviderError(f"simulator unreachable at {self._base}: {error}", retryable=True) from error
        except TimeoutError as error:
            raise ProviderError(
                f"simulator did not answer {method} {url} within {self._timeout:g}s", retryable=True
            ) from error


def _build(env: Mapping[str, str], session: aiohttp.ClientSession | None) -> SimulatorProvider | None:
    """The provider for the simulator the worker was pointed at (`--simulator-url`); None without one."""
    url = env.get(SIMULATOR_URL_ENV)
    return SimulatorProvider(url, session) if url and session is not None else None


REGISTRATION = Registration(_build, OwnsBy.PROVIDER_ID, switched_on_by=SIMULATOR_URL_ENV)
