"""Node activities: quarantine, observe and release. Each is idempotent under retries.

Everything gpuheal changes on a node is recorded on the node itself (annotations under
`gpuheal.io/`), written in the same conditional patch as the change. A retried activity therefore
finds its own earlier work and does not mistake it for the state a person left.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubernetes.aio import client
from kubernetes.aio.client.models import V1Node, V1Taint
from pydantic import ValidationError
from temporalio import activity

from gpuheal.activities.contract import implements
from gpuheal.activities.kube import (
    annotations_of,
    boot_id_of,
    condition_of,
    merge_patch_node,
    on_fresh_node,
    read_node,
)
from gpuheal.activities.recent_nodes import RecentNodes
from gpuheal.domain import contracts, marks
from gpuheal.domain.diagnostics import DIAGNOSTICS
from gpuheal.domain.gpu_check import GPU_CHECK
from gpuheal.domain.gpu_health import GpuHealthReport, read_stamp
from gpuheal.domain.gpu_reset import GPU_RESET
from gpuheal.domain.node_orders import OrderKind, ReportT
from gpuheal.domain.steps import NodeRecord, NodeRef, NodeState, Outcome, QuarantineRequest, ReleaseRequest


class NodeActivities:
    """Activities that read and mark nodes through the Kubernetes API."""

    def __init__(self, api: client.ApiClient, recent: RecentNodes | None = None) -> None:
        self._core = client.CoreV1Api(api)
        # Where the nodes this worker observes are kept a moment, for the asks for permits that follow.
        self._recent = recent or RecentNodes()

    @implements(contracts.QUARANTINE)
    async def quarantine_node(self, request: QuarantineRequest) -> NodeRecord:
        """Cordon the node and add gpuheal's NoSchedule taint, recording what was there before.

        A node already cordoned by someone else is recorded as such and stays cordoned when gpuheal
        lets go. A node still carrying the marks of an earlier gpuheal remediation (an escalated one)
        keeps that remediation's record of how gpuheal found it.
        """

        async def quarantine(node: V1Node | None) -> NodeRecord:
            if node is None:
                return NodeRecord(node=request.node, exists=False, managed=False, cordoned_before=False, boot_id="")
            annotations = annotations_of(node)
            labels = (node.metadata.labels if node.metadata else None) or {}
            if labels.get(marks.MANAGED_LABEL) == "false":
                return _record(
                    request.node, node, cordoned_before=bool(node.spec and node.spec.unschedulable), managed=False
                )
            if annotations.get(marks.REMEDIATION_ANNOTATION) == request.holder:
                return _record(
                    request.node,
                    node,
                    annotations.get(marks.CORDONED_BEFORE_ANNOTATION) == "true",
                    boot_id=annotations.get(marks.BOOT_ID_ANNOTATION, ""),
                )
            cordoned_before = was_cordoned_before(node)
            boot_id = boot_id_of(node)
            taint = {
                "key": marks.QUARANTINE_TAINT_KEY,
                "effect": "NoSchedule",
                "timeAdded": _rfc3339(datetime.now(UTC)),
            }
            await merge_patch_node(
                self._core,
                node,
                {
                    "metadata": {
                        "annotations": {
                            marks.REMEDIATION_ANNOTATION: request.holder,
                            marks.CORDONED_BEFORE_ANNOTATION: "true" if cordoned_before else "false",
                            marks.BOOT_ID_ANNOTATION: boot_id,
                            marks.REBOOT_REQUEST_ANNOTATION: None,
                            # An earlier run's orders are not this run's: no agent acts on them now.
                            marks.GPU_RESET_REQUEST_ANNOTATION: None,
                            marks.GPU_CHECK_REQUEST_ANNOTATION: None,
                            marks.DIAGNOSTICS_REQUEST_ANNOTATION: None,
                            marks.ESCALATION_ANNOTATION: None,
                        }
                    },
                    "spec": {"unschedulable": True, "taints": [*_foreign_taints(node), taint]},
                },
            )
            activity.logger.info("quarantined %s (cordoned before: %s)", request.node, cordoned_before)
            return _record(request.node, node, cordoned_before, boot_id=boot_id)

        return await on_fresh_node(self._core, request.node, quarantine)

    @implements(contracts.OBSERVE)
    async def observe_node(self, request: NodeRef) -> NodeState:
        """Read readiness, bootID, cordon and GPU health of the node; a deleted node reads as absent."""
        node = await read_node(self._core, request.node)
        self._recent.remember(request.node, node)
        return node_state(request.node, node)

    @implements(contracts.RELEASE)
    async def release_node(self, request: ReleaseRequest) -> NodeState:
        """Let go of the node as the outcome says, touching nothing another remediation holds.

        Resolved removes gpuheal's taint and annotations and uncordons the node unless it was cordoned
        before; Escalated keeps cordon and taint and annotates the reason; TakenBack (a person resumed or
        retried the escalated node) removes that reason and keeps the rest; StoodDown removes gpuheal's
        marks and leaves the cordon as the person who uncordoned the node set it.
        """

        async def release(node: V1Node | None) -> NodeState:
            if node is None or annotations_of(node).get(marks.REMEDIATION_ANNOTATION) != request.holder:
                return node_state(request.node, node)  # already released, or another run holds it now
            patch: dict[str, Any]
            if request.outcome is Outcome.ESCALATED:
                patch = {"metadata": {"annotations": {marks.ESCALATION_ANNOTATION: request.reason[:1000]}}}
            elif request.outcome is Outcome.TAKEN_BACK:
                patch = {"metadata": {"annotations": {marks.ESCALATION_ANNOTATION: None}}}
            else:
                patch = {
                    "metadata": {"annotations": dict.fromkeys(marks.ANNOTATIONS)},
                    "spec": {"taints": _foreign_taints(node)},
                }
                if request.outcome is Outcome.RESOLVED and not request.cordoned_before:
                    patch["spec"]["unschedulable"] = False
            updated = await merge_patch_node(self._core, node, patch)
            activity.logger.info("released %s: %s", request.node, request.outcome.value)
            return node_state(request.node, updated)

        return await on_fresh_node(self._core, request.node, release)


def _foreign_taints(node: V1Node) -> list[dict[str, Any]]:
    """The node's taints other than gpuheal's, exactly as the API server serves them.

    A merge patch replaces the whole list, so every taint gpuheal does not own must go back as it
    came: camelCase field names (the API server drops `time_added` as an unknown field, and with it
    the time the node lifecycle controller's NoExecute taints count their tolerations from) and
    `timeAdded` in the server's own RFC 3339 form.
    """
    taints = (node.spec.taints if node.spec else None) or []
    return [_taint_json(t) for t in taints if t.key != marks.QUARANTINE_TAINT_KEY]


def _taint_json(taint: V1Taint) -> dict[str, Any]:
    wire: dict[str, Any] = {"key": taint.key}
    if taint.value:
        wire["value"] = taint.value
    wire["effect"] = taint.effect
    if taint.time_added is not None:
        wire["timeAdded"] = _rfc3339(taint.time_added)
    return wire


def _rfc3339(moment: datetime) -> str:
    """A metav1.Time as the API server writes it: whole seconds, UTC, `Z`."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def was_cordoned_before(node: V1Node) -> bool:
    """Whether the node was cordoned before gpuheal: as an earlier remediation's marks recorded it
    where they are still there (an escalated or failed run), else as it is now."""
    annotations = annotations_of(node)
    if marks.REMEDIATION_ANNOTATION in annotations:
        return annotations.get(marks.CORDONED_BEFORE_ANNOTATION) == "true"
    return bool(node.spec and node.spec.unschedulable)


def _record(name: str, node: V1Node, cordoned_before: bool, *, managed: bool = True, boot_id: str = "") -> NodeRecord:
    return NodeRecord(
        node=name,
        exists=True,
        managed=managed,
        cordoned_before=cordoned_before,
        boot_id=boot_id or boot_id_of(node),
        labels=dict((node.metadata.labels if node.metadata else None) or {}),
    )


def node_state(name: str, node: V1Node | None) -> NodeState:
    """The node as the workflow judges it: Ready and bootID from the kubelet, GPU health from the agent.

    None (the node does not exist) reads as an absent node.
    """
    if node is None:
        return NodeState(node=name, exists=False, ready=False, boot_id="", unschedulable=False, gpu_healthy=None)
    ready = condition_of(node, "Ready")
    report = _gpu_report(node)
    return NodeState(
        node=name,
        exists=True,
        ready=ready is not None and ready[0] == "True",
        boot_id=boot_id_of(node),
        unschedulable=bool(node.spec and node.spec.unschedulable),
        gpu_healthy=None if report is None else report.healthy,
        gpu_message=report.message if report else "",
        gpu_report=report,
        gpu_reset=_order_report(node, GPU_RESET),
        gpu_check=_order_report(node, GPU_CHECK),
        diagnostics=_order_report(node, DIAGNOSTICS),
        held=marks.on_hold((node.metadata.labels if node.metadata else None) or {}),
    )


def _gpu_report(node: V1Node) -> GpuHealthReport | None:
    """The GpuHealthy condition with the boot and moment its writer names, if any, and its timestamps."""
    for condition in (node.status.conditions if node.status else None) or []:
        if condition.type == marks.GPU_HEALTHY_CONDITION:
            message, boot_id, at = read_stamp(condition.message or "")
            return GpuHealthReport(
                status=condition.status or "Unknown",
                message=message,
                boot_id=boot_id,
                reported_at=at,
                heartbeat=_aware(condition.last_heartbeat_time),
                transition=_aware(condition.last_transition_time),
            )
    return None


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _order_report(node: V1Node, kind: OrderKind[Any, ReportT]) -> ReportT | None:
    """The agent's last answer to an order of `kind`, in its condition; an unreadable one counts as no answer yet."""
    answer = condition_of(node, kind.condition)
    if answer is None:
        return None
    try:
        return kind.report.model_validate_json(answer[1])
    except ValidationError:
        return None
