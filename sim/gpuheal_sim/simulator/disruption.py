"""PodDisruptionBudgets: the disruption controller that writes their status, and the eviction's budget check.

Follows kubernetes/kubernetes ``pkg/controller/disruption/disruption.go`` and
``pkg/registry/core/pod/storage/eviction.go``.

``DisruptionController`` writes a budget's status on its own, ``sync_seconds`` after a change that
can move it (a pod it selects, its spec, a controller's scale); readers see whatever was written
last, as on a real cluster. One sync (``trySync``) does this:

* the selected pods are every pod in the namespace the selector matches (a null selector matches
  nothing, an empty one everything);
* with an integer ``minAvailable`` the expected count is the number of selected pods; with
  ``maxUnavailable`` or a percentage it is the sum of the scales of the pods' controllers, found as
  upstream's finders do (ReplicationController, ReplicaSet -> Deployment, ReplicaSet, StatefulSet,
  then any resource's scale subresource). Pods with no controller are left out (a Warning
  ``UnmanagedPods`` Event says so); a controller without a scale (a Job, a DaemonSet) or one that
  cannot be found makes the sync fail;
* a failed sync is made safe (``failSafe``): ``disruptionsAllowed`` 0 and ``DisruptionAllowed=False``
  with reason ``SyncFailed`` and the error, everything else (``observedGeneration`` included) as it
  was, and a Warning ``CalculateExpectedPodCountFailed`` Event;
* ``disruptedPods`` (pods an eviction let go) keeps only entries of pods still there, not being
  deleted and younger than ``deletion_timeout``; an expired one is dropped with a Warning
  ``NotDeleted`` Event on the pod, and the budget is synced again when the next entry expires;
* a pod is healthy when it is Running, Ready, not being deleted and not in ``disruptedPods``;
  ``disruptionsAllowed = currentHealthy - desiredHealthy``, and 0 when that is negative or nothing
  is expected.

Events go through the cluster's event recorder as the controller manager's would; an Event the last
sync of the same object already recorded is not recorded again (the real recorder aggregates those).

``check_and_decrement`` is the eviction subresource's side: it checks the stored status and returns
the status to write (one less disruption allowed, the pod in ``disruptedPods``), or raises the
API error upstream raises.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from . import errors
from .clock import Timers
from .jsonvalues import JsonDict, clone, dig, json_equal
from .metadata import controller_ref, labels_of
from .objects import is_healthy_for_pdb, is_terminating
from .resources import ALL
from .selectors import LabelSelector, selector_from_object
from .store import DELETED, Change, Entry, Store
from .timestamps import parse_rfc3339, rfc3339, utcnow

if TYPE_CHECKING:
    from .events import EventRecorder

PDB_KEY = "poddisruptionbudgets.policy"
# How long an evicted pod may stay in disruptedPods without being deleted (DeletionTimeout).
DELETION_TIMEOUT_SECONDS = 120.0
# More entries than this in disruptedPods and the eviction subresource refuses (MaxDisruptedPodSize).
MAX_DISRUPTED_POD_SIZE = 2000
_COMPONENT = "controllermanager"
_CONDITION = "DisruptionAllowed"

_SELECTORS: dict[tuple[str, str], tuple[str, LabelSelector]] = {}


def _selector(pdb: JsonDict) -> LabelSelector:
    """The budget's parsed selector, cached per budget version (pod churn re-checks it constantly)."""
    m = pdb["metadata"]
    key = (str(m.get("uid")), str(m.get("namespace")))
    version = str(m.get("resourceVersion"))
    cached = _SELECTORS.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    try:
        selector = selector_from_object(dig(pdb, "spec", "selector"))
    except Exception:
        selector = LabelSelector(nothing=True)
    if len(_SELECTORS) > 10_000:
        _SELECTORS.clear()
    _SELECTORS[key] = (version, selector)
    return selector


def selects(pdb: JsonDict, pod: JsonDict) -> bool:
    return _selector(pdb).matches(labels_of(pod))


def pdbs_for_pod(store: Store, pod: JsonDict) -> list[Entry]:
    """The budgets in the pod's namespace whose selector matches it, by name (an empty selector matches all)."""
    ns = str(pod["metadata"].get("namespace") or "")
    return sorted((e for e in store.objects(PDB_KEY, ns) if selects(e.obj, pod)), key=lambda e: e.name)


# --- expected pods ------------------------------------------------------------------------------------


class SyncFailed(Exception):
    """The controller cannot compute the budget's status; the message is upstream's error text."""


# Resources the controller's REST mapper knows: what this cluster serves, and the two workload kinds
# upstream's finders name. (group, version, kind) -> (group-resource, storage key).
_MAPPING: dict[tuple[str, str, str], tuple[str, str]] = {
    **{(r.group, r.version, r.kind): (r.qualified, r.key) for r in ALL},
    ("apps", "v1", "StatefulSet"): ("statefulsets.apps", "statefulsets.apps"),
    ("", "v1", "ReplicationController"): ("replicationcontrollers", "replicationcontrollers"),
}
# Resources that implement the scale subresource on a real cluster.
_SCALABLE = frozenset({"deployments.apps", "replicasets.apps", "statefulsets.apps", "replicationcontrollers"})


def _group_version(api_version: object) -> tuple[str, str]:
    """``schema.ParseGroupVersion``."""
    text = str(api_version or "")
    if text in ("", "/"):
        return "", ""
    if text.count("/") == 0:
        return "", text
    if text.count("/") == 1:
        group, _, version = text.partition("/")
        return group, version
    raise SyncFailed(f"unexpected GroupVersion string: {text}")


def _replicas(entry: Entry) -> int:
    value = dig(entry.obj, "spec", "replicas")
    return 1 if value is None else int(value)


def _owned(store: Store, key: str, ns: str, ref: JsonDict) -> Entry | None:
    """The object a reference names, when it exists with the referenced UID."""
    entry = store.get(key, ns, str(ref.get("name")))
    return entry if entry is not None and entry.uid == ref.get("uid") else None


def _controller_scale(store: Store, ref: JsonDict, ns: str) -> tuple[str, int] | None:
    """(controller UID, scale) through upstream's finders, in their order; None when none matches."""
    group, version = _group_version(ref.get("apiVersion"))
    kind = ref.get("kind")
    if kind == "ReplicationController" and group == "":
        rc = _owned(store, "replicationcontrollers", ns, ref)
        if rc is not None:
            return rc.uid, _replicas(rc)
    if kind == "ReplicaSet" and group in ("apps", "extensions"):
        rs = _owned(store, "replicasets.apps", ns, ref)
        if rs is not None:
            owner = controller_ref(rs.obj)
            if owner is None or owner.get("kind") != "Deployment":
                return rs.uid, _replicas(rs)
            if _group_version(owner.get("apiVersion"))[0] in ("apps", "extensions"):
                dep = _owned(store, "deployments.apps", ns, owner)
                if dep is not None:
                    return dep.uid, _replicas(dep)
    if kind == "StatefulSet" and group == "apps":
        ss = _owned(store, "statefulsets.apps", ns, ref)
        if ss is not None:
            return ss.uid, _replicas(ss)
    return _scale_subresource(store, ref, ns, group, version)


def _scale_subresource(store: Store, ref: JsonDict, ns: str, group: str, version: str) -> tuple[str, int] | None:
    """``getScaleController``: the REST mapping of the controller's kind, then its scale."""
    kind = str(ref.get("kind"))
    mapped = [v for (g, ver, k), v in _MAPPING.items() if g == group and k == kind and (not version or ver == version)]
    if not mapped:
        if version:
            gv = f"{group}/{version}" if group else version
            raise SyncFailed(f'no matches for kind "{kind}" in version "{gv}"')
        raise SyncFailed(f'no matches for kind "{kind}" in group "{group}"')
    resource, key = mapped[0]
    if resource not in _SCALABLE:
        raise SyncFailed(f"{resource} does not implement the scale subresource")
    target = _owned(store, key, ns, ref)
    return (target.uid, _replicas(target)) if target is not None else None


def _expected_scale(store: Store, pods: list[JsonDict]) -> tuple[int, list[str]]:
    """``getExpectedScale``: the sum of the scales of the pods' controllers, and the unmanaged pods."""
    scales: dict[str, int] = {}
    unmanaged: list[str] = []
    for pod in pods:
        ref = controller_ref(pod)
        if ref is None:
            unmanaged.append(str(pod["metadata"]["name"]))
            continue
        if ref.get("uid") in scales:
            continue
        found = _controller_scale(store, ref, str(pod["metadata"].get("namespace") or ""))
        if found is None:
            raise SyncFailed(f'found no controllers for pod "{pod["metadata"]["name"]}"')
        scales[found[0]] = found[1]
    return sum(scales.values()), unmanaged


def _scaled(value: object, total: int) -> int:
    """``intstr.GetScaledValueFromIntOrPercent`` rounding up, with its errors."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise SyncFailed("invalid value for IntOrString: invalid type: neither int nor percentage")
    if not value.endswith("%"):
        raise SyncFailed("invalid value for IntOrString: invalid type: string is not a percentage")
    digits = value[:-1]
    try:
        percent = int(digits)
    except ValueError:
        raise SyncFailed(
            f'invalid value for IntOrString: invalid value "{value}": strconv.Atoi: parsing "{digits}": invalid syntax'
        ) from None
    return -(-percent * total // 100)


def expected_pod_count(store: Store, pdb: JsonDict, pods: list[JsonDict]) -> tuple[int, int, list[str]]:
    """``getExpectedPodCount``: (expected, desired healthy, unmanaged pods); raises ``SyncFailed``."""
    spec = pdb.get("spec") or {}
    max_unavailable = spec.get("maxUnavailable")
    min_available = spec.get("minAvailable")
    if max_unavailable is not None:
        expected, unmanaged = _expected_scale(store, pods)
        return expected, max(0, expected - _scaled(max_unavailable, expected)), unmanaged
    if isinstance(min_available, int) and not isinstance(min_available, bool):
        return len(pods), min_available, []
    if min_available is not None:
        expected, unmanaged = _expected_scale(store, pods)
        return expected, _scaled(min_available, expected), unmanaged
    return 0, 0, []


# --- status -------------------------------------------------------------------------------------------


def _set_condition(status: JsonDict, value: str, reason: str, message: str, now: str) -> None:
    """``apimeta.SetStatusCondition`` for DisruptionAllowed; the transition time moves with the status."""
    conditions = status.setdefault("conditions", [])
    observed = int(status.get("observedGeneration") or 0)
    for cond in conditions:
        if cond.get("type") == _CONDITION:
            if cond.get("status") != value:
                cond["status"] = value
                cond["lastTransitionTime"] = now
            cond.update(reason=reason, message=message, observedGeneration=observed)
            return
    conditions.append(
        {
            "type": _CONDITION,
            "status": value,
            "observedGeneration": observed,
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        }
    )


def _update_allowed_condition(status: JsonDict, now: str) -> None:
    """``pdbhelper.UpdateDisruptionAllowedCondition``."""
    if int(status.get("disruptionsAllowed") or 0) > 0:
        _set_condition(status, "True", "SufficientPods", "", now)
    else:
        _set_condition(status, "False", "InsufficientPods", "", now)


def _conditions_up_to_date(pdb: JsonDict) -> bool:
    """``pdbhelper.ConditionsAreUpToDate``."""
    status = pdb.get("status") or {}
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == _CONDITION), None)
    if cond is None or int(status.get("observedGeneration") or 0) != int(pdb["metadata"].get("generation") or 0):
        return False
    if int(status.get("disruptionsAllowed") or 0) > 0:
        return bool(cond.get("status") == "True" and cond.get("reason") == "SufficientPods")
    return bool(cond.get("status") == "False" and cond.get("reason") == "InsufficientPods")


def _new_status(
    pdb: JsonDict, healthy: int, desired: int, expected: int, disrupted: dict[str, str], now: str
) -> JsonDict | None:
    """``updatePdbStatus``: the status to write, or None when the stored one is already it."""
    allowed = healthy - desired
    if expected <= 0 or allowed <= 0:
        allowed = 0
    old = pdb.get("status") or {}
    generation = int(pdb["metadata"].get("generation") or 0)
    if (
        old.get("currentHealthy") == healthy
        and old.get("desiredHealthy") == desired
        and old.get("expectedPods") == expected
        and old.get("disruptionsAllowed") == allowed
        and json_equal(old.get("disruptedPods") or {}, disrupted)
        and int(old.get("observedGeneration") or 0) == generation
        and _conditions_up_to_date(pdb)
    ):
        return None
    status: JsonDict = {"observedGeneration": generation}
    if disrupted:
        status["disruptedPods"] = disrupted
    status.update(
        disruptionsAllowed=allowed,
        currentHealthy=healthy,
        desiredHealthy=desired,
        expectedPods=expected,
        conditions=clone(old.get("conditions") or []),
    )
    _update_allowed_condition(status, now)
    return status


def _fail_safe(pdb: JsonDict, message: str, now: str) -> JsonDict:
    """``failSafe``: nothing allowed and SyncFailed, the rest of the stored status as it was."""
    status: JsonDict = clone(pdb.get("status") or {})
    status["disruptionsAllowed"] = 0
    _set_condition(status, "False", "SyncFailed", message, now)
    return status


def selector_string(selector: object) -> str:
    """A ``*metav1.LabelSelector`` as Go's ``%v`` prints it (its generated ``String()``)."""
    if not isinstance(selector, dict):
        return "nil"
    labels = selector.get("matchLabels") or {}
    pairs = "".join(f"{k}: {labels[k]}," for k in sorted(labels))
    exprs = "".join(
        f"LabelSelectorRequirement{{Key:{e.get('key')},Operator:{e.get('operator')},"
        f"Values:[{' '.join(str(v) for v in e.get('values') or [])}],}},"
        for e in selector.get("matchExpressions") or []
        if isinstance(e, dict)
    )
    return (
        f"&LabelSelector{{MatchLabels:map[string]string{{{pairs}}},"
        f"MatchExpressions:[]LabelSelectorRequirement{{{exprs}}},}}"
    )


StatusWriter = Callable[[str, str, JsonDict], None]
Event = tuple[str, str, str]  # (type, reason, message)


class DisruptionController:
    """Keeps every PodDisruptionBudget's status, a little behind the changes, as the real controller does."""

    def __init__(
        self,
        store: Store,
        timers: Timers,
        write_status: StatusWriter,
        recorder: EventRecorder,
        *,
        sync_seconds: float = 0.0,
        deletion_timeout: float = DELETION_TIMEOUT_SECONDS,
    ) -> None:
        self.store = store
        self.timers = timers
        self._write_status = write_status
        self.recorder = recorder
        self.sync_seconds = sync_seconds
        self.deletion_timeout = timedelta(seconds=deletion_timeout)
        # Events the last sync of an object recorded (by UID), so a repeat is not recorded again.
        self._recorded: dict[str, set[Event]] = {}
        # Pods (namespace, name, UID) seen under more than one budget, to warn about.
        self._overlapping: set[tuple[str, str, str]] = set()
        store.add_listener(self._on_change)

    # --- what makes a budget sync -----------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        if change.key == PDB_KEY:
            if change.type == DELETED:
                self._recorded.pop(change.new.uid, None)
            else:
                self._mark(change.new.namespace, change.new.name)
            return
        if change.key == "pods":
            ns = change.new.namespace
            matched = [
                entry
                for entry in self.store.objects(PDB_KEY, ns)
                if selects(entry.obj, change.new.obj) or (change.old is not None and selects(entry.obj, change.old.obj))
            ]
            for entry in matched:
                self._mark(ns, entry.name)
            if len(matched) > 1 and change.type != DELETED:
                self._overlapping.add((ns, change.new.name, change.new.uid))
                self.timers.soon("pdb-overlap", self._warn_overlapping)
            if change.type == DELETED:
                self._recorded.pop(change.new.uid, None)
        elif change.key in ("replicasets.apps", "deployments.apps"):
            old_replicas = dig(change.old.obj, "spec", "replicas") if change.old else None
            if change.type != "MODIFIED" or old_replicas != dig(change.new.obj, "spec", "replicas"):
                for entry in self.store.objects(PDB_KEY, change.new.namespace):
                    self._mark(change.new.namespace, entry.name)

    def _mark(self, ns: str, name: str) -> None:
        key = ("pdb", ns, name)
        if not self.timers.pending(key):
            self.timers.later(key, self.sync_seconds, lambda: self.sync(ns, name))

    # --- one sync ---------------------------------------------------------------------------------

    def sync(self, namespace: str, name: str) -> None:
        """Compute and write one budget's status now (``sync`` / ``trySync``)."""
        entry = self.store.get(PDB_KEY, namespace, name)
        if entry is None:
            return
        pdb = entry.obj
        now = utcnow()
        stamp = rfc3339(now)
        events: set[Event] = set()
        selector = _selector(pdb)
        pods = [e.obj for e in self.store.objects("pods", namespace) if selector.matches(labels_of(e.obj))]
        if not pods:
            events.add(("Normal", "NoPods", "No matching pods found"))
        recheck: datetime | None = None
        try:
            try:
                expected, desired, unmanaged = expected_pod_count(self.store, pdb, pods)
            except SyncFailed as failure:
                events.add(
                    (
                        "Warning",
                        "CalculateExpectedPodCountFailed",
                        f"Failed to calculate the number of expected pods: {failure}",
                    )
                )
                raise
            if unmanaged:
                events.add(
                    (
                        "Warning",
                        "UnmanagedPods",
                        f"Pods selected by this PodDisruptionBudget (selector: {selector_string(dig(pdb, 'spec', 'selector'))}) "
                        "were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, "
                        'which may result in undefined behavior. To account for these pods please set ".spec.minAvailable" '
                        "field of the PDB to an integer value.",
                    )
                )
            disrupted, recheck = self._disrupted_pods(pods, pdb, now)
            healthy = sum(1 for p in pods if is_healthy_for_pdb(p) and p["metadata"]["name"] not in disrupted)
            status = _new_status(pdb, healthy, desired, expected, disrupted, stamp)
        except SyncFailed as failure:
            status = _fail_safe(pdb, str(failure), stamp)
            if json_equal(status, pdb.get("status") or {}):
                status = None
        if status is not None:
            self._write_status(namespace, name, status)
        self._record(pdb, events)
        if recheck is not None:
            delay = max((recheck - now).total_seconds(), 0.0)
            self.timers.later(("pdb-recheck", namespace, name), delay, lambda: self._mark(namespace, name))

    def _disrupted_pods(
        self, pods: list[JsonDict], pdb: JsonDict, now: datetime
    ) -> tuple[dict[str, str], datetime | None]:
        """``buildDisruptedPodMap``: the entries still due, and when the first of them expires."""
        old = dig(pdb, "status", "disruptedPods") or {}
        kept: dict[str, str] = {}
        recheck: datetime | None = None
        if not old:
            return kept, recheck
        for pod in pods:
            pod_name = str(pod["metadata"]["name"])
            if is_terminating(pod) or pod_name not in old:
                continue
            try:
                expires = parse_rfc3339(str(old[pod_name])) + self.deletion_timeout
            except ValueError:
                continue
            if expires < now:
                ns = pdb["metadata"].get("namespace")
                # Upstream formats the budget as "<namespace>/<namespace>" here.
                message = f"Pod was expected by PDB {ns}/{ns} to be deleted but it wasn't"
                self.recorder.record(pod, "Warning", "NotDeleted", message, _COMPONENT)
            else:
                kept[pod_name] = old[pod_name]
                recheck = expires if recheck is None or expires < recheck else recheck
        return kept, recheck

    def _record(self, involved: JsonDict, events: set[Event]) -> None:
        uid = str(involved["metadata"].get("uid"))
        before = self._recorded.get(uid, set())
        for etype, reason, message in sorted(events - before):
            self.recorder.record(involved, etype, reason, message, _COMPONENT)
        self._recorded[uid] = events

    def _warn_overlapping(self) -> None:
        """``getPdbForPod``: a pod under several budgets gets a Warning naming the one chosen."""
        pods, self._overlapping = self._overlapping, set()
        for ns, pod_name, uid in sorted(pods):
            entry = self.store.get("pods", ns, pod_name)
            if entry is None or entry.uid != uid:
                continue
            budgets = pdbs_for_pod(self.store, entry.obj)
            if len(budgets) < 2:
                continue
            message = f'Pod "{ns}"/"{pod_name}" matches multiple PodDisruptionBudgets.  Chose "{budgets[0].name}" arbitrarily.'
            before = self._recorded.get(entry.uid, set())
            event = ("Warning", "MultiplePodDisruptionBudgets", message)
            if event not in before:
                self.recorder.record(entry.obj, *event, _COMPONENT)
                self._recorded[entry.uid] = before | {event}


# --- the eviction's side ------------------------------------------------------------------------------


def forbidden(name: str, why: str) -> errors.ApiError:
    """``errors.NewForbidden(policy.Resource("poddisruptionbudget"), name, why)``."""
    return errors.ApiError(
        403,
        "Forbidden",
        f'poddisruptionbudget.policy "{name}" is forbidden: {why}',
        {"name": name, "group": "policy", "kind": "poddisruptionbudget"},
    )


def still_processing(name: str) -> errors.ApiError:
    """``createTooManyRequestsError``: 429 with Retry-After 10."""
    cause = {
        "reason": "DisruptionBudget",
        "message": f"The disruption budget {name} is still being processed by the server.",
    }
    return errors.too_many_requests("Cannot evict pod as it would violate the pod's disruption budget.", [cause], 10)


def check_and_decrement(pdb: JsonDict, pod_name: str, dry_run: bool, retry_after: int = 0) -> JsonDict | None:
    """``checkAndDecrement``: the status to write for evicting ``pod_name`` (None on a dry run), or raise.

    The stored status decides: a budget the controller has not seen at its generation is "still being
    processed", a negative one or one with too many unconfirmed evictions is Forbidden, one that
    allows nothing is 429. Otherwise one disruption fewer is allowed and the pod is recorded with the
    time, in the same write, so that no second eviction can spend the same disruption.
    """
    name = str(pdb["metadata"]["name"])
    status = pdb.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(pdb["metadata"].get("generation") or 0):
        raise still_processing(name)
    allowed = int(status.get("disruptionsAllowed") or 0)
    if allowed < 0:
        raise forbidden(name, "pdb disruptions allowed is negative")
    if len(status.get("disruptedPods") or {}) > MAX_DISRUPTED_POD_SIZE:
        raise forbidden(name, "DisruptedPods map too big - too many evictions not confirmed by PDB controller")
    if allowed == 0:
        cause = {
            "reason": "DisruptionBudget",
            "message": f"The disruption budget {name} needs {status.get('desiredHealthy', 0)} healthy pods "
            f"and has {status.get('currentHealthy', 0)} currently",
        }
        raise errors.too_many_requests(
            "Cannot evict pod as it would violate the pod's disruption budget.", [cause], retry_after
        )
    if dry_run:
        return None
    new: JsonDict = clone(status)
    new["disruptionsAllowed"] = allowed - 1
    stamp = rfc3339()
    if allowed - 1 == 0:
        _update_allowed_condition(new, stamp)
    disrupted = dict(new.get("disruptedPods") or {})
    disrupted[pod_name] = stamp
    new["disruptedPods"] = disrupted
    return new
