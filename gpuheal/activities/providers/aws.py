"""The AWS provider: reboots EC2 instances with boto3's `RebootInstances`.

The node's providerID names the instance and its zone (`aws:///us-east-1a/i-0abc…`); the region is
the zone's (a local or Wavelength zone such as `us-west-2-lax-1a` belongs to `us-west-2`).
Everything else comes from boto3's standard chain: credentials (IRSA's web identity token on EKS,
instance profile, environment), the endpoint (`AWS_ENDPOINT_URL_EC2`, `AWS_ENDPOINT_URL`) and the
CA bundle (`AWS_CA_BUNDLE`), so production needs no gpuheal-specific setting. `AwsSettings` holds
explicit overrides for tests and odd setups.

EC2's reboot has no operation to follow: the call returns once EC2 has accepted the request, and
completion is proven by the node coming back with a new bootID.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ProxyConnectionError,
    SSLError,
)

from gpuheal.activities.providers import RebootTarget, kit
from gpuheal.activities.providers.kit import Failure, one_line
from gpuheal.activities.providers.refusal import certificate_rejected

_SCHEME = "aws://"
_EXPECTED = "aws:///<zone>/<instance-id>, e.g. aws:///us-east-1a/i-0123456789abcdef0"
# Instance IDs are "i-" and 8 (older) or 17 hex digits.
_INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")
# A zone is its region ("us-east-1", "us-gov-west-1", "eusc-de-east-1") followed by a letter
# ("us-east-1a") or, for local and Wavelength zones, a suffix ("us-west-2-lax-1a",
# "us-east-1-wl1-bos-wlz-1"). Region names end at their first all-digit part.
_ZONE = re.compile(r"(?P<region>[a-z]+(?:-[a-z]+)+-\d+)(?:[a-z]+|-[a-z0-9-]+)")

_THROTTLING = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
_NOT_FOUND = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
_DENIED = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})
# The credentials themselves were refused (expired, wrong, from another partition).
_BAD_CREDENTIALS = frozenset(
    {"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "RequestExpired"}
)
_RETRYABLE_CODES = frozenset({"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable"})


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """Explicit overrides of boto3's standard settings; None leaves the choice to boto3's chain."""

    # Overrides AWS_ENDPOINT_URL_EC2 / AWS_ENDPOINT_URL.
    endpoint_url: str | None = None
    # Overrides AWS_CA_BUNDLE: the CA certificates that sign the endpoint's certificate.
    ca_bundle: str | None = None
    # Attempts per call, the first included, in botocore's standard retry mode. Kept small:
    # Temporal retries the activity with its own backoff, so the SDK must not sit on throttling.
    max_attempts: int = 3
    connect_timeout: timedelta = timedelta(seconds=5)
    read_timeout: timedelta = timedelta(seconds=20)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AwsSettings:
        """Settings for the worker: none of gpuheal's own.

        Every AWS setting has a standard variable that boto3 reads itself (AWS_DEFAULT_REGION,
        AWS_ENDPOINT_URL_EC2, AWS_CA_BUNDLE, AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE for IRSA).
        """
        return cls()


@dataclass(frozen=True, slots=True)
class Ec2Instance:
    """The EC2 instance a providerID names."""

    instance_id: str
    # None for the zone-less form (`aws:////i-…`): boto3's configured region (AWS_DEFAULT_REGION) is used.
    zone: str | None
    region: str | None

    @property
    def where(self) -> str:
        return self.region or "the configured default region"


def parse_provider_id(node: str, provider_id: str) -> Ec2Instance:
    """The instance behind `aws:///<zone>/<id>`, also accepting `aws://<zone>/<id>` and `aws:////<id>`.

    These are the forms Kubernetes' AWS cloud provider writes and reads. Raises a non-retryable
    ProviderError naming the node and the expected shape for anything else.
    """

    def malformed(why: str) -> Exception:
        return kit.not_located(RebootTarget(node, provider_id), "an EC2 instance", _EXPECTED, why)

    if not provider_id.startswith(_SCHEME):
        raise malformed("not an aws:// ID")
    # aws:///zone/id has an empty host; aws://zone/id puts the zone there. Either way the parts
    # left after dropping empty ones are [zone, id] or [id].
    parts = [part for part in provider_id[len(_SCHEME) :].split("/") if part]
    if len(parts) == 2:
        zone, instance_id = parts
    elif len(parts) == 1:
        zone, instance_id = None, parts[0]
    else:
        raise malformed("expected a zone and an instance ID")
    if not _INSTANCE_ID.fullmatch(instance_id):
        raise malformed(f"{instance_id!r} is not an instance ID like i-0123456789abcdef0")
    region = None
    if zone is not None:
        match = _ZONE.fullmatch(zone)
        if match is None:
            raise malformed(f"{zone!r} is not an availability zone like us-east-1a")
        region = match["region"]
    return Ec2Instance(instance_id, zone, region)


class AwsProvider(kit.CloudProvider[Ec2Instance]):
    """Reboots the EC2 instance behind a node, in the region its zone belongs to, and terminates it
    where the policy has machines replaced."""

    name = "aws"
    scheme = _SCHEME
    # EC2 reboots always go through the OS first; there is nothing gentler to ask for.

    def __init__(self, settings: AwsSettings | None = None) -> None:
        self._settings = settings or AwsSettings()
        self._clients: kit.ClientCache[tuple[str | None, bool], Any] = kit.ClientCache()
        # One session for every client (it loads the service model once), used by one thread at a time.
        self._session: Any = None
        self._session_lock = threading.Lock()

    def locate(self, target: RebootTarget) -> Ec2Instance:
        return parse_provider_id(target.node, target.provider_id)

    async def restart(self, target: RebootTarget, instance: Ec2Instance) -> str:
        """Ask EC2 to reboot the instance. EC2 always reboots through the OS first (a hard reboot
        follows if it does not shut down within minutes), so `graceful` changes nothing here.

        A ProviderError is `refused` when no attempt botocore made can have rebooted the instance:
        each was answered with an error or never connected (`_note_attempt` reports each one).
        botocore retries a read timeout or a closed connection too, so its last error alone does
        not tell: a throttled retry after a request that timed out on its way back may well have
        rebooted the machine.
        """

        def call() -> str:
            response = self._client(instance.region, once=True).reboot_instances(InstanceIds=[instance.instance_id])
            request_id = response.get("ResponseMetadata", {}).get("RequestId", "?")
            return f"EC2 accepted RebootInstances for {instance.instance_id} in {instance.where} (request {request_id})"

        return await kit.call(call, self._classifier(target, instance, "ec2:RebootInstances"))

    async def replace(self, target: RebootTarget) -> str:
        """Terminate the instance, for its Auto Scaling group (or Karpenter) to launch another.

        EC2 terminates an instance already shutting down or terminated again without an error, so
        botocore's own retries and Temporal's are safe here, unlike a reboot's.
        """
        instance = self.locate(target)

        def call() -> str:
            response = self._client(instance.region).terminate_instances(InstanceIds=[instance.instance_id])
            changes = response.get("TerminatingInstances", [])
            state = changes[0].get("CurrentState", {}).get("Name", "unknown") if changes else "unknown"
            request_id = response.get("ResponseMetadata", {}).get("RequestId", "?")
            return (
                f"EC2 accepted TerminateInstances for {instance.instance_id} in {instance.where}: "
                f"{state} (request {request_id})"
            )

        return await kit.call(call, self._classifier(target, instance, "ec2:TerminateInstances"))

    async def requested_since(self, target: RebootTarget, since: datetime) -> bool | None:
        """Always None: EC2 keeps no record of reboot requests to ask.

        RebootInstances leaves the instance `running` throughout, takes no client token (so a
        repeated call cannot be recognised) and DescribeInstances shows no trace of it. CloudTrail
        does log the call, but minutes late and through another service and permission, which is no
        basis for a decision. With None the repair activity takes its own durable record of the
        request as the answer and does not call again.
        """
        return None

    async def describe(self, target: RebootTarget) -> str:
        """The instance's state, with its status checks and scheduled events where EC2 has them."""
        instance = self.locate(target)

        def call() -> str:
            client = self._client(instance.region)
            reservations = client.describe_instances(InstanceIds=[instance.instance_id]).get("Reservations", [])
            found = [item for reservation in reservations for item in reservation.get("Instances", [])]
            if not found:
                # A terminated instance drops out of DescribeInstances after a while.
                raise kit.fail(_not_found_message(target, instance, "InvalidInstanceID.NotFound"), retryable=False)
            state = found[0].get("State", {}).get("Name", "unknown")
            line = f"EC2 {instance.instance_id} in {instance.where}: {state}"
            reason = found[0].get("StateReason", {}).get("Message")
            if reason and state != "running":
                line += f" ({reason})"
            return line + _status_checks(client, instance)

        return await kit.call(call, self._classifier(target, instance, "ec2:DescribeInstances"))

    def _client(self, region: str | None, *, once: bool = False) -> Any:
        """The EC2 client for `region`, made once: boto3 clients are thread-safe, sessions are not.

        `once`: a client that never retries, for RebootInstances. botocore retries a read timeout
        too, and a timed-out reboot may have been carried out; Temporal retries the attempt instead,
        asking again only when EC2 refused it.
        """

        def build() -> Any:
            settings = self._settings
            config = Config(
                retries={"mode": "standard", "total_max_attempts": 1 if once else settings.max_attempts},
                connect_timeout=settings.connect_timeout.total_seconds(),
                read_timeout=settings.read_timeout.total_seconds(),
            )
            with self._session_lock:
                if self._session is None:
                    self._session = boto3.session.Session()
                client = self._session.client(
                    "ec2",
                    region_name=region,
                    endpoint_url=settings.endpoint_url,
                    # None keeps botocore's default: AWS_CA_BUNDLE, else its own CA bundle.
                    verify=settings.ca_bundle,
                    config=config,
                )
            client.meta.events.register("needs-retry.ec2.RebootInstances", _note_attempt)
            return client

        return self._clients.get((region, once), build)

    @staticmethod
    def _classifier(target: RebootTarget, instance: Ec2Instance, permission: str) -> kit.Classifier:
        return lambda error: _classify(error, target, instance, permission)


def _classify(error: Exception, target: RebootTarget, instance: Ec2Instance, permission: str) -> Failure | None:
    """A boto3 failure as a Failure. Whether a reboot's attempts reached EC2 is `_note_attempt`'s to say."""
    if isinstance(error, ClientError):
        return _client_error(target, instance, permission, error)
    if isinstance(error, NoRegionError):
        return Failure(
            f"node {target.node}'s providerID {target.provider_id!r} names no zone and no AWS region is "
            "configured; set AWS_DEFAULT_REGION (or a region in the AWS config file) for the worker",
            retryable=False,
        )
    if isinstance(error, NoCredentialsError):
        return Failure(
            f"no AWS credentials to call {permission} for node {target.node}: give the worker's service "
            "account an IAM role (IRSA: the eks.amazonaws.com/role-arn annotation) or an instance profile",
            retryable=False,
        )
    if isinstance(error, SSLError):
        return Failure(
            f"TLS to the EC2 endpoint for {instance.where} failed ({error}); "
            "check AWS_CA_BUNDLE and AWS_ENDPOINT_URL_EC2",
            retryable=False,
        )
    if isinstance(error, ConnectionError | HTTPClientError):
        return Failure(f"EC2 in {instance.where} unreachable: {error}", retryable=True)
    if isinstance(error, BotoCoreError):
        # Credential refresh failures (an STS hiccup behind IRSA) and the like: worth another try.
        return Failure(f"EC2 call for node {target.node} failed: {error}", retryable=True)
    return None


def _note_attempt(response: Any = None, caught_exception: BaseException | None = None, **_: Any) -> None:
    """botocore's needs-retry handler, called after every attempt of RebootInstances: report what became of it.

    It decides nothing (None leaves the retry decision to botocore's own handler).
    """
    if caught_exception is not None:
        # No connection was made, so nothing was sent. A read timeout or a connection closed after
        # sending (ReadTimeoutError, ConnectionClosedError) may have reached EC2.
        connected = not isinstance(
            caught_exception, EndpointConnectionError | ConnectTimeoutError | ProxyConnectionError
        )
        if connected and not (isinstance(caught_exception, SSLError) and certificate_rejected(caught_exception)):
            kit.reached()
    elif response is None:
        kit.reached()
    else:
        kit.answered(int(response[0].status_code))


def _status_checks(client: Any, instance: Ec2Instance) -> str:
    """EC2's status checks and scheduled events, as a suffix; empty when EC2 has none to give.

    Best effort: the state alone is a complete answer, so a refused or failed status call (the
    worker may lack ec2:DescribeInstanceStatus) leaves the suffix out rather than failing describe.
    """
    try:
        statuses = client.describe_instance_status(InstanceIds=[instance.instance_id], IncludeAllInstances=True).get(
            "InstanceStatuses", []
        )
    except (ClientError, BotoCoreError):
        return ""
    if not statuses:
        return ""
    status = statuses[0]
    checks = [
        f"{label} {status[key]['Status']}"
        for key, label in (("InstanceStatus", "instance"), ("SystemStatus", "system"))
        if status.get(key, {}).get("Status") not in (None, "not-applicable")
    ]
    events = [f"{event.get('Code')} scheduled" for event in status.get("Events", [])]
    parts = ([f"status checks: {', '.join(checks)}"] if checks else []) + events
    return f"; {'; '.join(parts)}" if parts else ""


def _not_found_message(target: RebootTarget, instance: Ec2Instance, code: str) -> str:
    return (
        f"EC2 instance {instance.instance_id} does not exist in {instance.where} ({code}); "
        f"check node {target.node}'s providerID {target.provider_id!r}"
    )


def _client_error(target: RebootTarget, instance: Ec2Instance, permission: str, error: Any) -> Failure:
    details = error.response.get("Error", {})
    code = str(details.get("Code", "Unknown"))
    message = str(details.get("Message", "")).strip()
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _THROTTLING or code.startswith("Throttl") or status == 429:
        return Failure(
            f"EC2 throttled {permission} for {instance.instance_id} in {instance.where} ({code}); will retry",
            retryable=True,
        )
    if code in _NOT_FOUND:
        return Failure(_not_found_message(target, instance, code), retryable=False)
    if code in _DENIED:
        return Failure(
            f"the worker may not call {permission} on {instance.instance_id} in {instance.where} ({code}): "
            f"grant {permission} to the IAM role of the worker's service account (IRSA)"
            + (f"; EC2 said: {one_line(message)}" if message else ""),
            retryable=False,
        )
    if code in _BAD_CREDENTIALS:
        return Failure(
            f"EC2 refused the worker's AWS credentials for {permission} in {instance.where} ({code}: "
            f"{one_line(message)}); check the IAM role of the worker's service account (IRSA) and the clock",
            retryable=False,
        )
    retryable = code in _RETRYABLE_CODES or status >= 500
    return Failure(
        f"EC2 {permission} for {instance.instance_id} in {instance.where} failed ({code}, HTTP {status}): "
        f"{one_line(message)}",
        retryable=retryable,
    )
