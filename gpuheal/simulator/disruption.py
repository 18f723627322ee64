"""PodDisruptionBudget status, computed as the disruption controller does, and kept live.

``compute_status`` derives ``currentHealthy``, ``desiredHealthy``, ``expectedPods`` and
``disruptionsAllowed`` from the pods the budget selects right now:

* a pod is healthy when it is Running, Ready and not being deleted;
* with an integer ``minAvailable`` the expected count is the number of selected pods;
* with ``maxUnavailable`` or a percentage ``minAvailable`` it is the scale of the pods'
  controllers (a Deployment's or ReplicaSet's ``spec.replicas``), percentages rounded up;
* ``disruptionsAllowed = max(0, currentHealthy - desiredHealthy)``, and 0 when nothing is expected.

``DisruptionController`` rewrites a budget's status when a pod it selects changes, batching changes
within one event-loop turn; readers (GET, LIST, eviction) flush pending recomputations first, so
the numbers a client sees are never stale.
"""

from __future__ import annotations

from collections.abc import Callable

from .clock import Timers
from .conditions import set_condition
from .intstr import int_or_percent
from .jsonvalues import JsonDict, dig
from .metadata import controller_ref, labels_of
from .objects import is_healthy_for_pdb
from .selectors import LabelSelector, selector_from_object
from .store import Change, Entry, Store

PDB_KEY = "poddisruptionbudgets.policy"


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
    """The budgets in the pod's namespace whose selector matches it."""
    ns = str(pod["metadata"].get("namespace") or "")
    if not labels_of(pod):
        return []
    return [e for e in store.objects(PDB_KEY, ns) if selects(e.obj, pod)]


def _controller_scale(store: Store, pod: JsonDict, seen: set[str]) -> int:
    """The replicas of the pod's scalable controller (counted once per controller), else 1."""
    ref = controller_ref(pod)
    ns = str(pod["metadata"].get("namespace") or "")
    if ref is None or ref.get("kind") != "ReplicaSet":
        return 1
    rs = store.get("replicasets.apps", ns, str(ref.get("name")))
    if rs is None:
        return 1
    owner = controller_ref(rs.obj)
    if owner is not None and owner.get("kind") == "Deployment":
        dep = store.get("deployments.apps", ns, str(owner.get("name")))
        if dep is not None:
            uid = dep.uid
            if uid in seen:
                return 0
            seen.add(uid)
            return int(dig(dep.obj, "spec", "replicas") if dig(dep.obj, "spec", "replicas") is not None else 1)
    if rs.uid in seen:
        return 0
    seen.add(rs.uid)
    return int(dig(rs.obj, "spec", "replicas") if dig(rs.obj, "spec", "replicas") is not None else 1)


def compute_status(store: Store, pdb: JsonDict, now: str) -> JsonDict:
    """The status the disruption controller would write for ``pdb`` now."""
    ns = str(pdb["metadata"].get("namespace") or "")
    selector = _selector(pdb)
    pods = [e.obj for e in store.objects("pods", ns) if selector.matches(labels_of(e.obj))]
    healthy = sum(1 for p in pods if is_healthy_for_pdb(p))
    spec = pdb.get("spec") or {}
    min_available = spec.get("minAvailable")
    max_unavailable = spec.get("maxUnavailable")
    expected = desired = 0
    if max_unavailable is not None:
        seen: set[str] = set()
        expected = sum(_controller_scale(store, p, seen) for p in pods)
        desired = max(0, expected - int_or_percent(max_unavailable, expected, True))
    elif isinstance(min_available, int) and not isinstance(min_available, bool):
        expected = len(pods)
        desired = min_available
    elif min_available is not None:
        seen = set()
        expected = sum(_controller_scale(store, p, seen) for p in pods)
        desired = int_or_percent(min_available, expected, True)
    allowed = healthy - desired
    if expected <= 0 or allowed <= 0:
        allowed = 0
    old = pdb.get("status") or {}
    conditions = [dict(c) for c in old.get("conditions") or []]
    if allowed > 0:
        set_condition(conditions, "DisruptionAllowed", "True", "SufficientPods", "", now)
    else:
        set_condition(conditions, "DisruptionAllowed", "False", "InsufficientPods", "", now)
    for cond in conditions:
        cond["observedGeneration"] = pdb["metadata"].get("generation", 1)
    status: JsonDict = {
        "observedGeneration": pdb["metadata"].get("generation", 1),
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "conditions": conditions,
    }
    return status


def _status_equal(a: JsonDict, b: JsonDict) -> bool:
    keys = ("observedGeneration", "disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods")
    if any(a.get(k) != b.get(k) for k in keys):
        return False
    ca = [(c.get("type"), c.get("status"), c.get("reason")) for c in a.get("conditions") or []]
    cb = [(c.get("type"), c.get("status"), c.get("reason")) for c in b.get("conditions") or []]
    return ca == cb


StatusWriter = Callable[[str, str, JsonDict], None]


class DisruptionController:
    """Keeps every PodDisruptionBudget's status current as pods come, go and change readiness."""

    def __init__(self, store: Store, timers: Timers, write_status: StatusWriter, now: Callable[[], str]) -> None:
        self.store = store
        self.timers = timers
        self._write_status = write_status
        self._now = now
        self._dirty: set[tuple[str, str]] = set()
        store.add_listener(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.key == PDB_KEY:
            if change.type != "DELETED":
                old_spec = change.old.obj.get("spec") if change.old else None
                if change.old is None or old_spec != change.new.obj.get("spec") or "status" not in change.new.obj:
                    self._mark(change.new.namespace, change.new.name)
            return
        if change.key == "pods":
            ns = change.new.namespace
            for entry in self.store.objects(PDB_KEY, ns):
                if selects(entry.obj, change.new.obj) or (
                    change.old is not None and selects(entry.obj, change.old.obj)
                ):
                    self._mark(ns, entry.name)
        elif change.key in ("replicasets.apps", "deployments.apps"):
            old_replicas = dig(change.old.obj, "spec", "replicas") if change.old else None
            if change.type != "MODIFIED" or old_replicas != dig(change.new.obj, "spec", "replicas"):
                for entry in self.store.objects(PDB_KEY, change.new.namespace):
                    if dig(entry.obj, "spec", "maxUnavailable") is not None or isinstance(
                        dig(entry.obj, "spec", "minAvailable"), str
                    ):
                        self._mark(change.new.namespace, entry.name)

    def _mark(self, ns: str, name: str) -> None:
        self._dirty.add((ns, name))
        self.timers.soon("pdb", self.flush)

    def flush(self, namespace: str | None = None) -> None:
        """Recompute the budgets marked dirty (all, or those of ``namespace``)."""
        todo = [k for k in self._dirty if namespace is None or k[0] == namespace]
        for key in todo:
            self._dirty.discard(key)
            entry = self.store.get(PDB_KEY, *key)
            if entry is None:
                continue
            status = compute_status(self.store, entry.obj, self._now())
            if not _status_equal(entry.obj.get("status") or {}, status):
                self._write_status(key[0], key[1], status)
