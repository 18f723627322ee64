"""Google Compute Engine: reset the VM behind a node whose providerID is ``gce://<project>/<zone>/<name>``.

The reset goes through google-cloud-compute's REST client (``instances.reset``) and is followed to
the end with ``zoneOperations.wait`` until the operation is DONE; an operation that ends with an
error raises. Credentials come only from Application Default Credentials (``google.auth.default()``:
GKE workload identity in production, ``GOOGLE_APPLICATION_CREDENTIALS`` elsewhere); TLS trust from
requests' standard ``REQUESTS_CA_BUNDLE``. The one gpuheal variable is ``GPUHEAL_GCE_ENDPOINT``, an
API endpoint override (a private endpoint, or the simulator), because the SDK has no standard one.

Compute Engine keeps a record of every reset: the zone's operations. ``requested_since`` lists the
reset operations that target the instance, which is what lets a retried repair see that its reset
reached Google even when the worker died before writing down the answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypedDict, TypeVar

import google.auth
import google.auth.exceptions
import requests
from google.api_core import exceptions as api_exceptions
from google.api_core import retry as api_retry
from google.api_core.client_options import ClientOptions

from gpuheal.activities.providers import RebootTarget, kit
from gpuheal.activities.providers.kit import Failure
from gpuheal.activities.providers.refusal import refusing_status, requests_never_sent

if TYPE_CHECKING:
    # google.cloud.compute_v1 builds every Compute Engine service and message when imported (about
    # ten seconds here): it is imported when the provider first connects, not with this module.
    from google.cloud import compute_v1

T = TypeVar("T")

SCHEME = "gce://"
ENDPOINT_VARIABLE = "GPUHEAL_GCE_ENDPOINT"
# What the worker's Google service account needs; roles/compute.instanceAdmin.v1 carries all three.
PERMISSIONS = (
    "compute.instances.reset, compute.instances.get and compute.zoneOperations.list (and compute.instances.delete "
    "where the policy replaces machines)"
)
_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
# Errors that say "not now" rather than "no": throttling, and the service or the way to it failing.
_TRANSIENT = (
    api_exceptions.TooManyRequests,
    api_exceptions.InternalServerError,
    api_exceptions.BadGateway,
    api_exceptions.ServiceUnavailable,
    api_exceptions.GatewayTimeout,
    api_exceptions.DeadlineExceeded,
)
# Compute Engine has answered rate limits with 403 as well as 429; these reasons mean "slow down".
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"})
# The worker's clock and Google's may disagree a little, and Compute Engine writes insert times in
# milliseconds: a reset inserted this much before `since` still counts as one asked for since then.
_CLOCK_ALLOWANCE = timedelta(seconds=5)
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z0-9]+$")
_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
# Project ids, including legacy domain-scoped ones ("example.com:my-project").
_PROJECT = re.compile(r"^(?:[a-z0-9.-]+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$")


class _Zonal(TypedDict):
    project: str
    zone: str


@dataclass(frozen=True, slots=True)
class GceInstance:
    """A Compute Engine instance, as a GKE node's providerID names it."""

    project: str
    zone: str
    name: str

    @property
    def resource(self) -> str:
        return f"projects/{self.project}/zones/{self.zone}/instances/{self.name}"

    @property
    def zonal(self) -> _Zonal:
        """The arguments that place a zonal call: the instance's project and zone."""
        return _Zonal(project=self.project, zone=self.zone)

    def __str__(self) -> str:
        return f"{self.name} in zone {self.zone} ({self.project})"


def parse_provider_id(node: str, provider_id: str) -> GceInstance:
    """``gce://<project>/<zone>/<name>`` -> GceInstance; anything else is a non-retryable ProviderError."""
    parts = provider_id[len(SCHEME) :].split("/") if provider_id.startswith(SCHEME) else []
    if (
        len(parts) != 3
        or _PROJECT.match(parts[0]) is None
        or _ZONE.match(parts[1]) is None
        or _NAME.match(parts[2]) is None
    ):
        raise kit.not_located(
            RebootTarget(node, provider_id), "a GCE instance", "gce://<project>/<zone>/<instance-name>"
        )
    return GceInstance(*parts)


@dataclass(frozen=True, slots=True)
class GcpSettings:
    """Overrides of what the SDK decides by itself; None leaves it to the SDK.

    Following a reset's operation is gpuheal's own loop (`kit.follow_operation`), so its pace and
    patience are set here rather than in the SDK.
    """

    # How long to follow a reset operation before giving up (retryably) on waiting for it.
    operation_timeout: timedelta = timedelta(minutes=5)
    # The least time between two polls of an operation (`wait` itself holds until DONE or ~2 min).
    poll_interval: timedelta = timedelta(seconds=1)
    # Per-request timeout, and how long the SDK itself retries a transient failure of a read.
    request_timeout: timedelta = timedelta(seconds=30)
    read_retry: timedelta = timedelta(seconds=10)
    # Compute Engine API endpoint ("https://compute.googleapis.com" by default).
    endpoint: str | None = None
    # CA bundle to trust instead of requests' own (REQUESTS_CA_BUNDLE, else certifi).
    ca_bundle: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GcpSettings:
        """gpuheal's own variable: ``GPUHEAL_GCE_ENDPOINT``. Trust and credentials use the standard ones."""
        return cls(endpoint=env.get(ENDPOINT_VARIABLE) or None)


@dataclass(frozen=True, slots=True)
class _Clients:
    instances: compute_v1.InstancesClient
    operations: compute_v1.ZoneOperationsClient


class GcpProvider(kit.CloudProvider[GceInstance]):
    """Resets Compute Engine instances (GKE nodes) and reads Compute Engine's record of resets."""

    name = "gcp"
    scheme = SCHEME
    # A GCE reset is a hard reset; stop/start could give up the GPUs.

    def __init__(self, settings: GcpSettings | None = None) -> None:
        self._settings = settings or GcpSettings()
        self._clients: kit.ClientCache[None, _Clients] = kit.ClientCache()
        # Reads (get, list, wait) are idempotent: retry a transient failure briefly, then let Temporal
        # retry the activity with its own backoff. The reset itself is never retried by the SDK.
        self._retry = api_retry.Retry(
            predicate=api_retry.if_exception_type(*_TRANSIENT),
            initial=0.2,
            maximum=2.0,
            multiplier=2.0,
            timeout=self._settings.read_retry.total_seconds(),
        )

    def locate(self, target: RebootTarget) -> GceInstance:
        return parse_provider_id(target.node, target.provider_id)

    async def restart(self, target: RebootTarget, instance: GceInstance) -> str:
        """Reset the instance and wait for the operation to be DONE; raise if it ended with an error.

        A reset is a hard reset: Compute Engine has no graceful restart short of stop and start,
        which could give up the VM's GPUs to someone else, so `target.graceful` is not honoured.

        A ProviderError is `refused` when the reset request cannot have reached Compute Engine or
        was answered with an error (see `_unsent`); once the reset is accepted, nothing is refused.
        An operation that ended with an error is not refused either, though `requested_since` does
        not count it, so a retry asks again all the same.
        """
        settings = self._settings
        operation = await self._run(
            target,
            instance,
            "reset",
            lambda clients: clients.instances.reset_unary(
                **instance.zonal, instance=instance.name, retry=None, timeout=settings.request_timeout.total_seconds()
            ),
        )
        # Accepted: from here on the instance may be resetting, whatever fails.
        kit.reached()
        operation, polls = await self._done(target, instance, operation, "reset")
        return f"GCE reset instance {instance}: operation {operation.name} DONE after {polls} polls"

    async def replace(self, target: RebootTarget) -> str:
        """Delete the instance, for its managed instance group (a GKE node pool) to recreate it.

        Deleting is made idempotent here, as a retried attempt needs: an instance that is gone
        (notFound) or being deleted already (resourceNotReady) is what was asked for.
        """
        instance = self.locate(target)
        settings = self._settings

        def delete(clients: _Clients) -> compute_v1.Operation | str:
            try:
                return clients.instances.delete_unary(
                    **instance.zonal,
                    instance=instance.name,
                    retry=None,
                    timeout=settings.request_timeout.total_seconds(),
                )
            except api_exceptions.NotFound:
                return f"GCE instance {instance} is gone already (notFound)"
            except api_exceptions.BadRequest as error:
                if "resourceNotReady" not in _reasons(error):
                    raise
                return f"GCE instance {instance} is being deleted already (resourceNotReady)"

        started = await self._run(target, instance, "delete", delete)
        if isinstance(started, str):
            return started
        operation, polls = await self._done(target, instance, started, "delete")
        return (
            f"GCE deleted instance {instance}: operation {operation.name} DONE after {polls} polls; "
            "its managed instance group recreates it"
        )

    async def _done(
        self, target: RebootTarget, instance: GceInstance, operation: compute_v1.Operation, action: str
    ) -> tuple[compute_v1.Operation, int]:
        """Follow the zonal operation of `action` until DONE (and how many polls that took); raise if
        it ended with an error, or is still running after the settings' operation timeout."""
        from google.cloud import compute_v1

        settings = self._settings
        polls = 0
        name = operation.name

        async def wait(left: timedelta) -> compute_v1.Operation:
            nonlocal polls
            polls += 1
            # The operation is followed through our own client: the one ExtendedOperation.result() polls
            # with is built without the client options, so it would ignore an endpoint override.
            return await self._run(
                target,
                instance,
                action,
                lambda clients: clients.operations.wait(
                    **instance.zonal,
                    operation=name,
                    retry=self._retry,
                    # `wait` holds the request until DONE or about two minutes: give it that long.
                    timeout=max(1.0, min(left.total_seconds(), 150.0)),
                ),
            )

        operation = await kit.follow_operation(
            operation,
            wait,
            lambda operation: operation.status == compute_v1.Operation.Status.DONE,
            timeout=settings.operation_timeout,
            interval=settings.poll_interval,
            overdue=lambda operation: (
                f"GCE {action} of instance {instance} was accepted (operation {operation.name}) "
                f"but is still {operation.status.name} after {settings.operation_timeout.total_seconds():.0f}s"
            ),
        )
        failure = _operation_error(operation)
        if failure is not None:
            status, text = failure
            raise kit.fail(
                f"GCE {action} of instance {instance} failed: operation {operation.name} ended with {text}",
                retryable=status == 429 or status >= 500,
            )
        return operation, polls

    async def requested_since(self, target: RebootTarget, since: datetime) -> bool | None:
        """Whether a reset of the instance was inserted at or after `since` and did not fail.

        Read from the zone's operations (type "reset", targeting the instance). A reset whose
        operation ended with an error did not reset the machine, so it does not count.
        """
        instance = self.locate(target)
        return await self._run(
            target,
            instance,
            "list reset operations of",
            lambda clients: self._requested_since(clients, instance, since),
        )

    async def describe(self, target: RebootTarget) -> str:
        """Compute Engine's view: "GCE instance <name> in zone <zone> (<project>): RUNNING"."""
        instance = self.locate(target)
        found = await self._run(target, instance, "get", lambda clients: self._get(clients, instance))
        detail = f" ({found.status_message})" if found.status_message else ""
        return f"GCE instance {instance}: {found.status or 'UNKNOWN'}{detail}"

    # --- blocking parts, run in a thread -----------------------------------------------------------

    def _requested_since(self, clients: _Clients, instance: GceInstance, since: datetime) -> bool:
        from google.cloud import compute_v1

        # The instance's own selfLink is exactly what Compute Engine writes as the operations' targetLink.
        link = self._get(clients, instance).self_link
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        earliest = since - _CLOCK_ALLOWANCE
        operations = clients.operations.list(
            request=compute_v1.ListZoneOperationsRequest(
                **instance.zonal,
                filter=f'(operationType = "reset") AND (targetLink = "{link}")',
            ),
            retry=self._retry,
            timeout=self._settings.request_timeout.total_seconds(),
        )
        for operation in operations:
            if operation.target_link != link or operation.operation_type != "reset":
                continue  # the filter is the server's to apply; a wider answer must not count
            if _inserted(operation) >= earliest and _operation_error(operation) is None:
                return True
        return False

    def _get(self, clients: _Clients, instance: GceInstance) -> compute_v1.Instance:
        return clients.instances.get(
            **instance.zonal,
            instance=instance.name,
            retry=self._retry,
            timeout=self._settings.request_timeout.total_seconds(),
        )

    # --- clients and errors ------------------------------------------------------------------------

    async def _run(self, target: RebootTarget, instance: GceInstance, action: str, call: Callable[[_Clients], T]) -> T:
        """Run `call` with the clients in a thread, its failures sorted by `_classify`."""
        endpoint = self._settings.endpoint
        return await kit.call(
            lambda: call(self._clients.get(None, self._connect)),
            lambda error: _classify(error, target, instance, action, endpoint),
        )

    def _connect(self) -> _Clients:
        """The clients, built once: ADC is looked up once (on GKE it asks the metadata server)."""
        from google.cloud import compute_v1

        credentials, _ = google.auth.default(default_scopes=(_CLOUD_PLATFORM,))
        options = ClientOptions(api_endpoint=self._settings.endpoint) if self._settings.endpoint else None
        clients = _Clients(
            compute_v1.InstancesClient(credentials=credentials, client_options=options, transport="rest"),
            compute_v1.ZoneOperationsClient(credentials=credentials, client_options=options, transport="rest"),
        )
        if self._settings.ca_bundle is not None:
            for client in (clients.instances, clients.operations):
                _trust(client.transport, self._settings.ca_bundle)
        return clients


def _trust(transport: object, ca_bundle: str) -> None:
    """Make a REST transport's requests session (and its token session) trust `ca_bundle`.

    The GAPIC REST transport takes no CA option; its sessions are requests sessions, whose `verify`
    is requests' own way to name a CA bundle. REQUESTS_CA_BUNDLE, when set, still takes precedence.
    """
    session = getattr(transport, "_session", None)
    if not isinstance(session, requests.Session):
        raise TypeError(f"cannot set a CA bundle on {type(transport).__name__}: it has no requests session")
    session.verify = ca_bundle
    auth_session = getattr(session, "_auth_request_session", None)
    if isinstance(auth_session, requests.Session):
        auth_session.verify = ca_bundle


def _inserted(operation: compute_v1.Operation) -> datetime:
    moment = datetime.fromisoformat(operation.insert_time)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _operation_error(operation: compute_v1.Operation) -> tuple[int, str] | None:
    """(HTTP status, description) of a finished operation's error, or None when it succeeded."""
    errors = list(operation.error.errors) if "error" in operation else []
    status = operation.http_error_status_code if "http_error_status_code" in operation else 0
    if not errors and status < 400:
        return None
    described = "; ".join(f"{error.code}: {error.message}" for error in errors) or operation.http_error_message
    return status, f"{status or 'error'} {described}".strip()


def _unsent(error: Exception) -> bool:
    """Whether a failed request cannot have been acted on (for the reset: cannot have reset the instance).

    True when Compute Engine answered it with an error (not a gateway's 502 or 504, which may come
    after the request was passed on), when no access token could be had (the request was never
    sent), and when no connection was made (refused, timed out connecting, the certificate failed
    verification). A request sent and then timed out, reset or cut off (a read timeout, a
    connection aborted, a TLS error mid-answer) may have reached Compute Engine: not refused.
    """
    if isinstance(error, api_exceptions.GoogleAPICallError):
        status = error.code or 0
        return error.response is not None and refusing_status(status)
    if isinstance(error, google.auth.exceptions.GoogleAuthError):
        return True
    return requests_never_sent(error)


def _reasons(error: api_exceptions.GoogleAPICallError) -> list[str]:
    found = [
        str(entry.get("reason")) for entry in error.errors or () if isinstance(entry, dict) and entry.get("reason")
    ]
    if error.reason:
        found.append(str(error.reason))
    return found


def _classify(
    error: Exception, target: RebootTarget, instance: GceInstance, action: str, endpoint: str | None
) -> Failure:
    """An SDK failure as a Failure, with `_unsent` saying whether its request went out."""
    return replace(_translate(error, target, instance, action, endpoint), unsent=_unsent(error))


def _translate(
    error: Exception, target: RebootTarget, instance: GceInstance, action: str, endpoint: str | None
) -> Failure:
    """An SDK failure as a ProviderError: transient ones retryable, the rest with what to do about them."""
    where = f"instance {instance.name} in zone {instance.zone} of project {instance.project}"
    if isinstance(error, api_exceptions.GoogleAPICallError):
        reasons = _reasons(error)
        said = f"{error.message} ({', '.join(reasons) or error.code})"
        if isinstance(error, api_exceptions.NotFound):
            return Failure(
                f"GCE instance {instance.name} not found in zone {instance.zone} of project {instance.project} "
                f"(notFound); check node {target.node}'s providerID {target.provider_id!r}. "
                f"Google said: {said}",
                retryable=False,
            )
        if isinstance(error, api_exceptions.Forbidden) and not _RATE_LIMIT_REASONS.intersection(reasons):
            return Failure(
                f"GCE denied the worker permission to {action} {where} ({', '.join(reasons) or 'forbidden'}): grant "
                f"its Google service account {PERMISSIONS} on project {instance.project} (for example "
                "roles/compute.instanceAdmin.v1), and check that the worker's Kubernetes service account is bound "
                f"to it through GKE workload identity. Google said: {error.message}",
                retryable=False,
            )
        if isinstance(error, api_exceptions.Unauthorized):
            return Failure(
                f"GCE rejected the worker's credentials when asked to {action} {where}: check its Application "
                f"Default Credentials (GKE workload identity). Google said: {said}",
                retryable=False,
            )
        if isinstance(error, (*_TRANSIENT, api_exceptions.Forbidden, api_exceptions.Conflict)):
            return Failure(f"GCE could not {action} {where} now, try again: {said}", retryable=True)
        return Failure(f"GCE refused to {action} {where}: {said}", retryable=(error.code or 0) >= 500)
    if isinstance(error, api_exceptions.RetryError):
        # The SDK's short retry window ran out on a transient error: that error says what happened.
        cause = error.cause if isinstance(error.cause, Exception) else None
        last = _translate(cause, target, instance, action, endpoint).message if cause is not None else str(error)
        return Failure(f"{last} (still failing after the SDK's retries)", retryable=True)
    if isinstance(error, google.auth.exceptions.DefaultCredentialsError):
        return Failure(
            f"no Google Application Default Credentials to {action} GCE {where}: run the worker with GKE workload "
            f"identity (or set GOOGLE_APPLICATION_CREDENTIALS); {error}",
            retryable=False,
        )
    if isinstance(error, google.auth.exceptions.RefreshError):
        return Failure(
            f"could not get a Google access token to {action} GCE {where}: {error}",
            retryable=bool(getattr(error, "retryable", False)),
        )
    if isinstance(error, (google.auth.exceptions.TransportError, requests.RequestException, OSError)):
        return Failure(
            f"could not reach Compute Engine at {endpoint or 'compute.googleapis.com'} to {action} GCE {where}: {error}",
            retryable=True,
        )
    return Failure(f"GCE call to {action} {where} failed: {type(error).__name__}: {error}", retryable=True)
