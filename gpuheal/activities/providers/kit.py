"""The provider kit: what every cloud provider shares, so each provider module holds only its cloud.

A provider supplies three things: how to locate its machine from the node (`CloudProvider.locate`,
raising `not_located` for a providerID of another shape), its SDK calls, and one classifier that
sorts an SDK exception into a `Failure` (the message an operator reads, whether trying again can
help, and whether the failing request went out). The kit does the rest, once:

- `call` runs a blocking SDK call in a thread (`awaited` awaits an asyncio-native one) and turns an
  exception the classifier knows into a ProviderError, built once with its final `refused`.
- `asking` opens the record of one reboot request; SDK hooks report each answer to it (`answered`,
  `reached`) from whichever thread the call runs in, since a context variable follows
  `asyncio.to_thread`. An error built inside is `refused` only while no request may have been acted
  on, so a parse error, a missing credential or a throttled request refuses, a lost answer does not.
- `follow_operation` polls a long-running operation until it is done or its deadline passes.
- `ClientCache` builds each SDK client once per key, behind a lock.
- `one_line` shortens an SDK's message for the escalation reason.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

from gpuheal.activities.providers import ProviderError, RebootTarget
from gpuheal.activities.providers.refusal import refusing_status

T = TypeVar("T")
S = TypeVar("S")
K = TypeVar("K")
C = TypeVar("C")
M = TypeVar("M")

# The longest SDK message quoted in a ProviderError. The reason a person reads is a sentence of ours
# around it: long enough for azure-identity's account of every credential it tried, short enough
# that an encoded authorization message (EC2 appends thousands of characters) does not bury it.
MESSAGE_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Failure:
    """A provider's verdict on one exception."""

    message: str
    retryable: bool
    # False when the failure shows that the failing request went out and may have been acted on (no
    # answer, or a gateway's error); True when it was answered with an error or never sent.
    unsent: bool = True


Classifier = Callable[[Exception], Failure | None]
"""Sorts an exception into a Failure; None for one that is not the SDK's, which propagates as it is."""


class _Asking:
    """The record of one reboot request: whether any of its requests may have been acted on."""

    __slots__ = ("reached",)

    def __init__(self) -> None:
        self.reached = False


_asking: ContextVar[_Asking | None] = ContextVar("gpuheal_provider_asking", default=None)


@contextmanager
def asking() -> Iterator[None]:
    """The scope of one reboot request: errors built inside are `refused` until a request reached the provider."""
    token = _asking.set(_Asking())
    try:
        yield
    finally:
        _asking.reset(token)


def reached() -> None:
    """A request of the reboot being asked reached the provider, which may act on it (a no-op outside `asking`)."""
    record = _asking.get()
    if record is not None:
        record.reached = True


def answered(status: int) -> None:
    """The provider answered a request of the reboot with `status`; only an error of its own refuses."""
    if not refusing_status(status):
        reached()


def fail(message: str, *, retryable: bool, unsent: bool = True) -> ProviderError:
    """The ProviderError for a failure, `refused` when it is a reboot's and nothing of it may have been acted on."""
    record = _asking.get()
    refused = record is not None and unsent and not record.reached
    return ProviderError(message, retryable=retryable, refused=refused)


def not_located(target: RebootTarget, what: str, expected: str, why: str | None = None) -> ProviderError:
    """The error for a providerID that names no machine of the provider: final, and nothing was sent."""
    because = f" ({why})" if why else ""
    return fail(
        f"node {target.node} has providerID {target.provider_id!r}, which does not name {what}{because}; "
        f"expected {expected}",
        retryable=False,
    )


async def awaited(request: Awaitable[T], classify: Classifier) -> T:
    """Await an SDK request, turning an exception `classify` knows into a ProviderError."""
    try:
        return await request
    except ProviderError:
        raise
    except Exception as error:
        failure = classify(error)
        if failure is None:
            raise
        raise fail(failure.message, retryable=failure.retryable, unsent=failure.unsent) from error


async def call(work: Callable[[], T], classify: Classifier) -> T:
    """Run a blocking SDK call in a thread, so the worker's event loop keeps serving other remediations."""
    return await awaited(asyncio.to_thread(work), classify)


async def follow_operation(
    start: S,
    poll: Callable[[timedelta], Awaitable[S]],
    done: Callable[[S], bool],
    *,
    timeout: timedelta,
    interval: timedelta,
    overdue: Callable[[S], str],
) -> S:
    """Poll a long-running operation from `start` until `done`, pausing `interval` between polls.

    `poll` is given the time left. An operation still running after `timeout` raises a retryable
    ProviderError with the `overdue` message: it was accepted and may still finish, so a retry finds
    the repair's own record rather than asking again.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout.total_seconds()
    pause = interval.total_seconds()
    state = start
    while not done(state):
        left = deadline - loop.time()
        if left <= 0:
            raise fail(overdue(state), retryable=True)
        await asyncio.sleep(min(pause, left))
        state = await poll(timedelta(seconds=max(0.0, deadline - loop.time())))
    return state


def one_line(text: str | None, limit: int = MESSAGE_LIMIT) -> str:
    """An SDK's message on one line, cut at `limit` characters."""
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class ClientCache(Generic[K, C]):
    """SDK clients, one per key, each built once; thread-safe, as provider calls run in threads.

    A client is built under its key's own lock, so building one (which may reach the network: a
    BMC's service root) holds up only calls for the same key.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[K, threading.Lock] = {}
        self._clients: dict[K, C] = {}

    def get(self, key: K, build: Callable[[], C], *, keep: Callable[[C], bool] = lambda _: True) -> C:
        """The client for `key`, built by `build` unless one is cached that `keep` accepts."""
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            client = self._clients.get(key)
            if client is None or not keep(client):
                client = self._clients[key] = build()
            return client

    def drain(self) -> list[C]:
        """Forget every client and return them, for the caller to close."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        return clients


class CloudProvider(ABC, Generic[M]):
    """The base of a provider that reboots machines named by a node's providerID.

    `reboot` locates the machine and asks for the reboot inside one `asking` record, so every
    provider treats "nothing was sent" alike, a providerID that does not parse included.
    """

    name: str
    expects_new_boot = True
    supports_graceful = False
    # The providerID's scheme ("aws://").
    scheme: str

    def owns(self, target: RebootTarget) -> bool:
        return target.provider_id.startswith(self.scheme)

    @abstractmethod
    def locate(self, target: RebootTarget) -> M:
        """The machine behind the node. Raises `not_located` for a providerID of another shape."""

    @abstractmethod
    async def restart(self, target: RebootTarget, machine: M) -> str:
        """Ask the cloud for the reboot (inside the `asking` record) and return a line for the record."""

    async def reboot(self, target: RebootTarget) -> str:
        with asking():
            return await self.restart(target, self.locate(target))
