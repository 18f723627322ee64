"""EC2's query API (what boto3 speaks) at ``/``.

boto3 POSTs a form (``Action=RebootInstances&Version=2016-11-15&InstanceId.1=i-…``) to the
regional endpoint and reads XML back: ``<ActionResponse xmlns="http://ec2.amazonaws.com/doc/
2016-11-15/">`` on success, ``<Response><Errors><Error><Code>…`` with the real HTTP status on failure.
This endpoint answers RebootInstances, TerminateInstances, DescribeInstances and
DescribeInstanceStatus that way for the fleet's nodes, whose providerIDs are
``aws:///us-east-1<a|b|c>/i-0…``. A terminated instance is ``shutting-down`` while its node is
still there and ``terminated`` after, and stays listed (EC2 lists one for about an hour), so
terminating it again succeeds without effect, as EC2's does.

The SigV4 signature is not verified (any credentials do), but its credential scope picks the
region as the real regional endpoints do: an instance in another region does not exist there.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from xml.sax.saxutils import escape

from aiohttp import web

from gpuheal_sim.simulator.jsonvalues import dig
from gpuheal_sim.simulator.nodes import UnknownNode

from .endpoint import CloudContext, CloudEndpoint
from .faults import CloudFault

REGION = "us-east-1"
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
OWNER_ID = "123456789012"
# What the simulated credentials are; EC2 does not check them here.
ACCESS_KEY_ID = "AKIAGPUHEALSIMULATOR"
SECRET_ACCESS_KEY = "gpuheal-simulator-secret"  # noqa: S105 - a dummy for a local endpoint

_PROVIDER_ID = re.compile(r"aws://(?P<host>[^/]*)/(?:(?P<zone>[^/]*)/)?(?P<id>i-[0-9a-f]+)")
_CREDENTIAL_REGION = re.compile(r"Credential=[^/,\s]+/\d{8}/(?P<region>[^/,\s]+)/ec2/aws4_request")
_INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")
_ZONE_REGION = re.compile(r"[a-z]+(?:-[a-z]+)+-\d+")


@dataclass(frozen=True, slots=True)
class _Instance:
    instance_id: str
    zone: str
    node: str

    @property
    def region(self) -> str:
        match = _ZONE_REGION.match(self.zone)
        return match.group(0) if match else REGION


class Ec2Error(Exception):
    """An EC2 error response: the HTTP status, EC2's code and its message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Ec2Endpoint(CloudEndpoint):
    name = "aws"

    def __init__(self, context: CloudContext) -> None:
        super().__init__(context)
        # Instance ID -> the providerID naming it; the node behind that comes from context.node_for.
        self._provider_ids: dict[str, str] = {}
        # The instances terminated, which outlive their nodes.
        self._terminated: dict[str, _Instance] = {}

    def provider_id(self, node: str, index: int) -> str:
        # "i-0" and 16 hex digits, like instance IDs since 2016, stable for a node index.
        digest = hashlib.sha256(f"gpuheal-sim-{index}".encode()).hexdigest()[:16]
        return f"aws:///{ZONES[index % len(ZONES)]}/i-0{digest}"

    def add_routes(self, app: web.Application) -> None:
        # Only POST / is EC2's: the listener serves the other clouds under their own paths.
        app.router.add_post("/", self._handle)

    def client_environment(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_EC2": self.context.url,
            "AWS_CA_BUNDLE": str(self.context.certificates.ca_file),
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
            # Credentials are given: never wait on an instance metadata service that is not there.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    # --- the query API ------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        # The query protocol names each parameter once (lists are InstanceId.1, InstanceId.2, …).
        form = {key: str(value) for key, value in (await request.post()).items()}
        action = str(form.get("Action", ""))
        try:
            if "Version" not in form:
                raise Ec2Error(400, "MissingParameter", "The request must contain the parameter Version")
            handler = {
                "RebootInstances": self._reboot_instances,
                "TerminateInstances": self._terminate_instances,
                "DescribeInstances": self._describe_instances,
                "DescribeInstanceStatus": self._describe_instance_status,
            }.get(action)
            if handler is None:
                raise Ec2Error(
                    400, "InvalidAction", f"The action {action or '(none)'} is not valid for this web service."
                )
            self._answer_fault(action, form)
            body = handler(form, _region_of(request))
        except Ec2Error as error:
            return _error(error, request_id)
        if action == "RebootInstances":
            await self.context.hold_reply()
        return web.Response(
            text=f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{NAMESPACE}">'
            f"<requestId>{request_id}</requestId>{body}</{action}Response>",
            content_type="text/xml",
        )

    def _answer_fault(self, action: str, form: Mapping[str, str]) -> None:
        fault = self.take_fault()
        if fault is CloudFault.THROTTLE:
            raise Ec2Error(503, "RequestLimitExceeded", "Request limit exceeded.")
        if fault is CloudFault.NOT_FOUND:
            raise _not_found(_instance_ids(form) or ["i-00000000000000000"])
        if fault is CloudFault.DENIED:
            raise Ec2Error(
                403,
                "UnauthorizedOperation",
                "You are not authorized to perform this operation. User: "
                f"arn:aws:sts::{OWNER_ID}:assumed-role/gpuheal-worker/botocore-session is not authorized to perform: "
                f"ec2:{action} because no identity-based policy allows the ec2:{action} action. "
                "Encoded authorization failure message: c2ltdWxhdGVkIGRlbmlhbA",
            )

    def _reboot_instances(self, form: Mapping[str, str], region: str) -> str:
        ids = _instance_ids(form)
        if not ids:
            raise Ec2Error(400, "MissingParameter", "The request must contain the parameter InstanceId")
        # EC2 checks every ID before rebooting any: one unknown ID fails the whole request.
        instances = self._resolve(ids, region)
        gone = [instance.instance_id for instance in instances if self._state(instance)[1] != "running"]
        if gone:
            raise Ec2Error(
                400,
                "IncorrectInstanceState",
                f"The instance '{gone[0]}' is not in a state from which it can be rebooted.",
            )
        if _dry_run(form):
            raise Ec2Error(412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
        for instance in instances:
            self.context.reboot(instance.node)
        return "<return>true</return>"

    def _terminate_instances(self, form: Mapping[str, str], region: str) -> str:
        ids = _instance_ids(form)
        if not ids:
            raise Ec2Error(400, "MissingParameter", "The request must contain the parameter InstanceId")
        instances = self._resolve(ids, region)
        if _dry_run(form):
            raise Ec2Error(412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
        items = []
        for instance in instances:
            before = self._state(instance)
            if instance.instance_id not in self._terminated:
                if before[1] == "running":
                    self.context.terminate(instance.node)
                self._terminated[instance.instance_id] = instance
            after = self._state(instance)
            items.append(
                f"<item><instanceId>{instance.instance_id}</instanceId>"
                f"<currentState><code>{after[0]}</code><name>{after[1]}</name></currentState>"
                f"<previousState><code>{before[0]}</code><name>{before[1]}</name></previousState></item>"
            )
        return f"<instancesSet>{''.join(items)}</instancesSet>"

    def _state(self, instance: _Instance) -> tuple[int, str]:
        """EC2's state code and name: running until terminated (here, or through the simulator's
        control API), shutting-down while its node remains."""
        if instance.instance_id not in self._terminated and not self._machine_terminated(instance.node):
            return 16, "running"
        return (
            (32, "shutting-down")
            if self.context.node_for(self._provider_ids.get(instance.instance_id, ""))
            else (
                48,
                "terminated",
            )
        )

    def _describe_instances(self, form: Mapping[str, str], region: str) -> str:
        _refuse_filters(form)
        ids = _instance_ids(form)
        instances = self._resolve(ids, region) if ids else self._in_region(region)
        page, next_token = _page(instances, form)
        reservations = "".join(
            f"<item><reservationId>r-{instance.instance_id[2:]}</reservationId><ownerId>{OWNER_ID}</ownerId>"
            f"<groupSet/><instancesSet><item>{self._instance_xml(instance)}</item></instancesSet></item>"
            for instance in page
        )
        return f"<reservationSet>{reservations}</reservationSet>{next_token}"

    def _describe_instance_status(self, form: Mapping[str, str], region: str) -> str:
        _refuse_filters(form)
        ids = _instance_ids(form)
        instances = self._resolve(ids, region) if ids else self._in_region(region)
        # Without IncludeAllInstances EC2 lists running instances only.
        if str(form.get("IncludeAllInstances", "false")).lower() != "true":
            instances = [instance for instance in instances if self._state(instance)[1] == "running"]
        page, next_token = _page(instances, form)
        items = []
        for instance in page:
            code, state = self._state(instance)
            # A reboot keeps the instance `running`; its instance status check fails until the OS is back.
            # An instance that is not running has no status checks to report.
            system = ("ok", "passed") if state == "running" else ("not-applicable", "not-applicable")
            check = ("initializing", "initializing") if self._rebooting(instance.node) else system
            items.append(
                f"<item><instanceId>{instance.instance_id}</instanceId>"
                f"<availabilityZone>{instance.zone}</availabilityZone>"
                f"<instanceState><code>{code}</code><name>{state}</name></instanceState>"
                f"<systemStatus><status>{system[0]}</status><details><item><name>reachability</name>"
                f"<status>{system[1]}</status></item></details></systemStatus>"
                f"<instanceStatus><status>{check[0]}</status><details><item><name>reachability</name>"
                f"<status>{check[1]}</status></item></details></instanceStatus></item>"
            )
        return f"<instanceStatusSet>{''.join(items)}</instanceStatusSet>{next_token}"

    def _instance_xml(self, instance: _Instance) -> str:
        # EC2 keeps a rebooting instance `running` (code 16); only stop/start or terminate changes it.
        code, state = self._state(instance)
        return (
            f"<instanceId>{instance.instance_id}</instanceId><imageId>ami-0gpuheal0sim0000</imageId>"
            f"<instanceState><code>{code}</code><name>{state}</name></instanceState>"
            f"<privateDnsName>{escape(instance.node)}.ec2.internal</privateDnsName><dnsName/><reason/>"
            "<amiLaunchIndex>0</amiLaunchIndex><productCodes/><instanceType>p5.48xlarge</instanceType>"
            "<launchTime>2025-01-01T00:00:00.000Z</launchTime>"
            f"<placement><availabilityZone>{instance.zone}</availabilityZone><groupName/>"
            "<tenancy>default</tenancy></placement><monitoring><state>disabled</state></monitoring>"
            "<architecture>x86_64</architecture><rootDeviceType>ebs</rootDeviceType>"
            "<rootDeviceName>/dev/xvda</rootDeviceName><virtualizationType>hvm</virtualizationType>"
            f"<tagSet><item><key>Name</key><value>{escape(instance.node)}</value></item></tagSet>"
        )

    # --- instances ----------------------------------------------------------------------------------

    def _scan(self) -> None:
        """Find every node whose providerID names an EC2 instance (nodes come and go through the API)."""
        self._provider_ids = {}
        for entry in self.context.sim.store.objects("nodes"):
            provider_id = str(dig(entry.obj, "spec", "providerID") or "")
            match = _PROVIDER_ID.fullmatch(provider_id)
            if match is not None:
                self._provider_ids[match["id"]] = provider_id

    def _instance(self, instance_id: str) -> _Instance | None:
        provider_id = self._provider_ids.get(instance_id)
        node = self.context.node_for(provider_id) if provider_id is not None else None
        if node is None or provider_id is None:
            return self._terminated.get(instance_id)
        match = _PROVIDER_ID.fullmatch(provider_id)
        assert match is not None
        return _Instance(instance_id, match["zone"] or match["host"] or ZONES[0], node)

    def _in_region(self, region: str) -> list[_Instance]:
        self._scan()
        found = (self._instance(instance_id) for instance_id in sorted(self._provider_ids.keys() | self._terminated))
        return [instance for instance in found if instance is not None and instance.region == region]

    def _resolve(self, ids: list[str], region: str) -> list[_Instance]:
        """The named instances, or EC2's error for the first malformed ID or for all unknown ones."""
        for instance_id in ids:
            if not _INSTANCE_ID.fullmatch(instance_id):
                raise Ec2Error(400, "InvalidInstanceID.Malformed", f'Invalid id: "{instance_id}" (expecting "i-...")')
        if any(self._instance(instance_id) is None for instance_id in ids):
            self._scan()  # a node added since the last scan
        instances = {instance_id: self._instance(instance_id) for instance_id in ids}
        # An instance of another region does not exist at this region's endpoint.
        missing = [i for i, instance in instances.items() if instance is None or instance.region != region]
        if missing:
            raise _not_found(missing)
        return [instance for instance in instances.values() if instance is not None]

    def _machine_terminated(self, node: str) -> bool:
        try:
            return self.context.sim.lifecycle.state(node).terminated_at is not None
        except UnknownNode:
            return False

    def _rebooting(self, node: str) -> bool:
        try:
            return self.context.sim.lifecycle.state(node).rebooting
        except UnknownNode:
            return False


def _region_of(request: web.Request) -> str:
    """The region the request was signed for, as the regional endpoint it was meant for."""
    match = _CREDENTIAL_REGION.search(request.headers.get("Authorization", ""))
    return match["region"] if match else REGION


def _instance_ids(form: Mapping[str, str]) -> list[str]:
    """InstanceId.1, InstanceId.2, … in order (the query protocol's list encoding)."""
    numbered = [
        (int(key.split(".", 1)[1]), str(value)) for key, value in form.items() if re.fullmatch(r"InstanceId\.\d+", key)
    ]
    return [value for _, value in sorted(numbered)]


def _dry_run(form: Mapping[str, str]) -> bool:
    return str(form.get("DryRun", "false")).lower() == "true"


def _refuse_filters(form: Mapping[str, str]) -> None:
    # Ignoring a filter would answer with instances the caller excluded; say it is not understood.
    for key, value in form.items():
        if re.fullmatch(r"Filter\.\d+\.Name", key):
            raise Ec2Error(
                400, "InvalidParameterValue", f"The filter '{value}' is invalid (the simulator supports none)"
            )


def _page(instances: list[_Instance], form: Mapping[str, str]) -> tuple[list[_Instance], str]:
    """A page of `instances` by MaxResults/NextToken, with the nextToken element when more follow."""
    if "MaxResults" not in form:
        return instances, ""
    try:
        size = int(str(form["MaxResults"]))
        start = int(str(form.get("NextToken", "0")) or "0")
    except ValueError as error:
        raise Ec2Error(400, "InvalidParameterValue", f"Invalid MaxResults or NextToken: {error}") from error
    end = start + max(size, 1)
    return instances[start:end], f"<nextToken>{end}</nextToken>" if end < len(instances) else ""


def _not_found(ids: list[str]) -> Ec2Error:
    if len(ids) == 1:
        return Ec2Error(400, "InvalidInstanceID.NotFound", f"The instance ID '{ids[0]}' does not exist")
    return Ec2Error(400, "InvalidInstanceID.NotFound", f"The instance IDs '{', '.join(ids)}' do not exist")


def _error(error: Ec2Error, request_id: str) -> web.Response:
    # EC2's error document has no namespace and spells RequestID with a capital D.
    return web.Response(
        status=error.status,
        text='<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message>"
        f"</Error></Errors><RequestID>{request_id}</RequestID></Response>",
        content_type="text/xml",
    )
