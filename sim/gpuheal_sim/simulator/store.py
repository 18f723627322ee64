"""The object store: what etcd plus the API server's watch cache are in a real cluster.

* One global ``resourceVersion`` counter (etcd's revision) is stamped on every write.
* Objects are JSON dicts, owned by the store once written and never mutated afterwards: writers
  build a new dict and store it. That lets list responses, watch events and history share them,
  and lets each stored version cache its JSON encoding once.
* Indexes: objects by resource and namespace, pods by ``spec.nodeName``, objects by owner uid.
* Each resource keeps a bounded history of changes, so a watch can resume from a
  resourceVersion; one older than the history gives 410 Gone, as in Kubernetes.
* Watchers get changes synchronously at write time, filtered and queued in a bounded buffer per
  watcher. A watcher that falls too far behind is closed (the client re-watches from its last
  resourceVersion), so a slow reader never blocks writers.
* Listeners (the simulated controllers) see every change right after it is committed. They must
  not write from inside the callback; they schedule work instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from . import errors
from .identity import new_uid
from .jsonvalues import JsonDict, dumps, json_equal
from .metadata import labels_of, meta
from .resources import BY_KEY, ResourceType, to_view
from .selectors import EVERYTHING, FieldSelector, LabelSelector
from .timestamps import rfc3339

log = logging.getLogger(__name__)

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"


@dataclass(eq=False, slots=True)
class Entry:
    """One stored version of an object, with its JSON encoding cached on first use."""

    obj: JsonDict
    rv: int
    _body: bytes | None = None

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace") or "")

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.obj["metadata"].get("uid") or "")

    def body(self) -> bytes:
        """JSON of the object without ``kind``/``apiVersion`` (how list items are written)."""
        if self._body is None:
            self._body = dumps({k: v for k, v in self.obj.items() if k not in ("kind", "apiVersion")})
        return self._body

    def full(self) -> bytes:
        """JSON of the whole object, ``kind`` and ``apiVersion`` first (GET and watch events)."""
        body = self.body()
        head = b'{"kind":' + dumps(self.obj.get("kind")) + b',"apiVersion":' + dumps(self.obj.get("apiVersion"))
        return head + (b"}" if body == b"{}" else b"," + body[1:])


@dataclass(slots=True)
class Change:
    """A committed write: ``new`` is the stored version (for DELETED, the last one, re-stamped)."""

    type: str
    key: str
    old: Entry | None
    new: Entry

    @property
    def rv(self) -> int:
        return self.new.rv


@dataclass(eq=False)
class Watcher:
    """A watch's server side: a filter, a bounded queue of encoded events and a closed flag."""

    rt: ResourceType
    namespace: str | None
    labels: LabelSelector = EVERYTHING
    fields: FieldSelector = field(default_factory=FieldSelector)
    limit: int = 10_000
    queue: deque[bytes] = field(default_factory=deque)
    closed: bool = False
    overflowed: bool = False
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def _view(self, entry: Entry) -> JsonDict:
        return to_view(self.rt, entry.obj)

    def _matches(self, entry: Entry | None) -> bool:
        if entry is None:
            return False
        if self.namespace is not None and entry.namespace != self.namespace:
            return False
        if not self.labels.empty and not self.labels.matches(labels_of(entry.obj)):
            return False
        return not (self.fields.requirements and not self.fields.matches(self._view(entry)))

    def encode(self, etype: str, entry: Entry) -> bytes:
        obj = entry.full() if self.rt.storage is None else dumps(self._view(entry))
        return b'{"type":"' + etype.encode() + b'","object":' + obj + b"}\n"

    def offer(self, change: Change) -> None:
        """Queue the event this change means to this watcher, if any (called by writers)."""
        if self.closed:
            return
        if change.type == DELETED:
            now_match, was_match = False, self._matches(change.new)
        elif change.type == ADDED:
            now_match, was_match = self._matches(change.new), False
        else:
            now_match, was_match = self._matches(change.new), self._matches(change.old)
        if now_match and was_match:
            etype = MODIFIED
        elif now_match:
            etype = ADDED
        elif was_match:
            etype = DELETED  # it left the selection (or was deleted)
        else:
            return
        self.push(self.encode(etype, change.new))

    def push(self, line: bytes) -> None:
        if len(self.queue) >= self.limit:
            self.overflowed = True
            self.close()
            return
        self.queue.append(line)
        self._wakeup.set()

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    async def wait(self, timeout: float | None) -> None:
        """Wait until something is queued or the watcher is closed (or ``timeout`` passes)."""
        if self.queue or self.closed:
            return
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)


Listener = Callable[[Change], None]


class Store:
    """All objects of the simulated cluster, versioned, indexed and watchable."""

    def __init__(self, history_size: int = 10_000, watch_queue_size: int = 10_000) -> None:
        self.rv = 0
        self.history_size = history_size
        self.watch_queue_size = watch_queue_size
        self._objects: dict[str, dict[str, dict[str, Entry]]] = {}
        self._counts: dict[str, int] = {}
        self._by_node: dict[str, dict[tuple[str, str], Entry]] = {}
        self._by_owner: dict[str, set[tuple[str, str, str]]] = {}
        self._by_uid: dict[str, tuple[str, str, str]] = {}
        self._history: dict[str, deque[Change]] = {}
        # Resources whose history dropped its oldest changes (a watch cache that wrapped around).
        self._trimmed: set[str] = set()
        self._watchers: dict[str, dict[tuple[str, str], set[Watcher]]] = {}
        self._listeners: list[Listener] = []

    # --- reads -------------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Every object as the API would serve it, in a fixed order, after the current resourceVersion:
        two snapshots are equal exactly when nothing was written in between."""
        parts = [f"rv={self.rv}".encode()]
        for key in sorted(self._objects):
            parts.extend(entry.full() for entry in self.sorted_objects(key))
        return b"\n".join(parts)

    def get(self, key: str, namespace: str, name: str) -> Entry | None:
        return self._objects.get(key, {}).get(namespace, {}).get(name)

    def objects(self, key: str, namespace: str | None = None) -> Iterator[Entry]:
        """Objects of a resource, optionally in one namespace (unordered)."""
        by_ns = self._objects.get(key, {})
        if namespace is not None:
            yield from by_ns.get(namespace, {}).values()
            return
        for entries in by_ns.values():
            yield from entries.values()

    def sorted_objects(self, key: str, namespace: str | None = None) -> list[Entry]:
        """Objects ordered by namespace then name, the order etcd's keys give a real server."""
        by_ns = self._objects.get(key, {})
        spaces = [namespace] if namespace is not None else sorted(by_ns)
        out: list[Entry] = []
        for ns in spaces:
            entries = by_ns.get(ns, {})
            out.extend(entries[n] for n in sorted(entries))
        return out

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    def namespaces_in_use(self, key: str) -> list[str]:
        return [ns for ns, entries in self._objects.get(key, {}).items() if entries]

    def pods_on_node(self, node: str) -> list[Entry]:
        return list(self._by_node.get(node, {}).values())

    def by_uid(self, uid: str) -> Entry | None:
        """The live object with this uid, if any."""
        where = self._by_uid.get(uid)
        return self.get(*where) if where is not None else None

    def owned_by(self, uid: str) -> list[tuple[str, Entry]]:
        """``(storage key, entry)`` for every object with an ownerReference to ``uid``."""
        out: list[tuple[str, Entry]] = []
        for key, ns, name in list(self._by_owner.get(uid, ())):
            entry = self.get(key, ns, name)
            if entry is not None:
                out.append((key, entry))
        return out

    # --- writes ------------------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def create(self, key: str, obj: JsonDict) -> Entry:
        """Store a new object; stamps uid, creationTimestamp and resourceVersion. 409 if it exists."""
        m = meta(obj)
        ns = str(m.get("namespace") or "")
        name = str(m["name"])
        if self.get(key, ns, name) is not None:
            raise errors.already_exists(BY_KEY[key].qualified, name)
        rv = self._next_rv()
        m.setdefault("uid", new_uid())
        m.setdefault("creationTimestamp", rfc3339())
        m["resourceVersion"] = str(rv)
        entry = Entry(obj, rv)
        self._objects.setdefault(key, {}).setdefault(ns, {})[name] = entry
        self._counts[key] = self._counts.get(key, 0) + 1
        self._by_uid[str(m["uid"])] = (key, ns, name)
        self._index(key, None, entry)
        self._commit(Change(ADDED, key, None, entry))
        return entry

    def update(self, key: str, obj: JsonDict, expect_rv: int | None = None) -> Entry:
        """Replace a stored object; 409 Conflict if ``expect_rv`` is given and is not current.

        An object equal to the stored one (``resourceVersion`` aside) is not written: the current
        entry comes back, with no new resourceVersion and no watch event, as etcd3's
        ``GuaranteedUpdate`` skips an update whose encoded object is unchanged.
        """
        m = meta(obj)
        ns = str(m.get("namespace") or "")
        name = str(m["name"])
        old = self.get(key, ns, name)
        if old is None:
            raise errors.not_found(BY_KEY[key].qualified, name)
        if expect_rv is not None and expect_rv != old.rv:
            raise errors.conflict(BY_KEY[key].qualified, name)
        old_meta = old.obj["metadata"]
        m.setdefault("uid", old_meta.get("uid"))
        m.setdefault("creationTimestamp", old_meta.get("creationTimestamp"))
        if _unchanged(old.obj, obj):
            return old
        rv = self._next_rv()
        m["resourceVersion"] = str(rv)
        entry = Entry(obj, rv)
        self._objects[key][ns][name] = entry
        self._index(key, old, entry)
        self._commit(Change(MODIFIED, key, old, entry))
        return entry

    def delete(self, key: str, namespace: str, name: str) -> Entry:
        """Remove an object; the DELETED event carries its last state with a new resourceVersion."""
        old = self.get(key, namespace, name)
        if old is None:
            raise errors.not_found(BY_KEY[key].qualified, name)
        rv = self._next_rv()
        obj = dict(old.obj)
        obj["metadata"] = dict(old.obj["metadata"], resourceVersion=str(rv))
        entry = Entry(obj, rv)
        del self._objects[key][namespace][name]
        self._counts[key] -= 1
        self._by_uid.pop(old.uid, None)
        self._index(key, old, None)
        self._commit(Change(DELETED, key, old, entry))
        return entry

    def _index(self, key: str, old: Entry | None, new: Entry | None) -> None:
        if key == "pods":
            old_node = str(old.obj.get("spec", {}).get("nodeName") or "") if old else ""
            new_node = str(new.obj.get("spec", {}).get("nodeName") or "") if new else ""
            ident = (old or new).namespace, (old or new).name  # type: ignore[union-attr]
            if old_node and old_node != new_node:
                bucket = self._by_node.get(old_node)
                if bucket is not None:
                    bucket.pop(ident, None)
            if new is not None and new_node:
                self._by_node.setdefault(new_node, {})[ident] = new
        old_owners = _owner_uids(old)
        new_owners = _owner_uids(new)
        if old_owners or new_owners:
            ref = old or new
            assert ref is not None
            ident3 = (key, ref.namespace, ref.name)
            for uid in old_owners - new_owners:
                owned = self._by_owner.get(uid)
                if owned is not None:
                    owned.discard(ident3)
                    if not owned:
                        del self._by_owner[uid]
            for uid in new_owners - old_owners:
                self._by_owner.setdefault(uid, set()).add(ident3)

    def _commit(self, change: Change) -> None:
        hist = self._history.setdefault(change.key, deque())
        hist.append(change)
        while len(hist) > self.history_size:
            hist.popleft()
            self._trimmed.add(change.key)
        for watcher in self._candidates(change):
            watcher.offer(change)
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:  # a broken controller must not break the write path
                log.exception("store listener failed on %s %s", change.type, change.key)

    # --- watches and listeners ---------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _candidates(self, change: Change) -> set[Watcher]:
        buckets = self._watchers.get(change.key)
        if not buckets:
            return set()
        out: set[Watcher] = set(buckets.get(("*", ""), ()))
        out.update(buckets.get(("name", change.new.name), ()))
        if change.key == "pods":
            for entry in (change.old, change.new):
                if entry is not None:
                    node = entry.obj.get("spec", {}).get("nodeName")
                    if node:
                        out.update(buckets.get(("node", str(node)), ()))
        return out

    @staticmethod
    def _bucket(watcher: Watcher) -> tuple[str, str]:
        name = watcher.fields.exact("metadata.name")
        if name is not None:
            return ("name", name)
        if watcher.rt.key == "pods":
            node = watcher.fields.exact("spec.nodeName")
            if node:
                return ("node", node)
        return ("*", "")

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        since: int | None,
        initial: bool,
    ) -> Watcher:
        """Register a watcher, atomically with its replay.

        ``since`` replays the changes after that resourceVersion; once the history has dropped changes,
        410 unless ``since`` is at least one below its oldest change, even when no change of this
        resource lies between (staging/src/k8s.io/apiserver/pkg/storage/cacher/watch_cache.go:
        ``resourceVersion < oldest-1`` is "too old resource version"). ``initial`` first sends an
        ADDED event for every object that matches now.
        """
        key = rt.key
        if since is not None and key in self._trimmed:
            oldest = self._history[key][0].rv
            if since < oldest - 1:
                raise errors.gone(f"too old resource version: {since} ({oldest - 1})")
        watcher = Watcher(rt, namespace, labels, fields, self.watch_queue_size)
        backlog = 0
        if initial:
            for entry in self.sorted_objects(key, namespace):
                if watcher._matches(entry):
                    watcher.queue.append(watcher.encode(ADDED, entry))
                    backlog += 1
        if since is not None:
            hist = self._history.get(key, deque())
            replay: list[Change] = []
            for change in reversed(hist):
                if change.rv <= since:
                    break
                replay.append(change)
            backlog += len(replay)
            watcher.limit = self.watch_queue_size + backlog
            for change in reversed(replay):
                watcher.offer(change)
        watcher.limit = self.watch_queue_size + backlog
        self._watchers.setdefault(key, {}).setdefault(self._bucket(watcher), set()).add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        watcher.close()
        bucket = self._watchers.get(watcher.rt.key, {}).get(self._bucket(watcher))
        if bucket is not None:
            bucket.discard(watcher)

    def close_watchers(self) -> None:
        for buckets in self._watchers.values():
            for watchers in buckets.values():
                for watcher in list(watchers):
                    watcher.close()

    def watcher_count(self) -> int:
        return sum(len(ws) for buckets in self._watchers.values() for ws in buckets.values())


def _unchanged(old: JsonDict, new: JsonDict) -> bool:
    """Whether ``new`` stores the same object as ``old``, ignoring ``metadata.resourceVersion``."""
    if old.keys() != new.keys():
        return False
    for key, value in old.items():
        other = new[key]
        if key == "metadata":
            if value.keys() - {"resourceVersion"} != other.keys() - {"resourceVersion"}:
                return False
            if any(value[k] != other[k] or not json_equal(value[k], other[k]) for k in value if k != "resourceVersion"):
                return False
        elif value != other or not json_equal(value, other):  # == first: fast, and rarely wrong
            return False
    return True


def _owner_uids(entry: Entry | None) -> set[str]:
    if entry is None:
        return set()
    refs = entry.obj.get("metadata", {}).get("ownerReferences")
    if not refs:
        return set()
    return {str(r.get("uid")) for r in refs if isinstance(r, dict) and r.get("uid")}
