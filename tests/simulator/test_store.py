"""The store on its own: resourceVersions, bounded history, watch replay and slow watchers."""

from __future__ import annotations

import pytest

from gpuheal_sim.simulator.errors import ApiError
from gpuheal_sim.simulator.resources import NODES, PODS
from gpuheal_sim.simulator.selectors import EVERYTHING, FieldSelector, parse_field_selector, parse_label_selector
from gpuheal_sim.simulator.store import Store


def _node(name: str, **labels: str) -> dict[str, object]:
    return {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name, "labels": dict(labels)}}


async def test_resource_versions_increase_and_history_replays() -> None:
    store = Store(history_size=5)
    first = store.create("nodes", _node("a"))
    second = store.update("nodes", _node("a", x="1"))
    assert second.rv == first.rv + 1 and second.obj["metadata"]["uid"] != ""
    watcher = store.watch(NODES, None, EVERYTHING, FieldSelector(), since=first.rv, initial=False)
    assert len(watcher.queue) == 1 and b'"MODIFIED"' in watcher.queue[0]
    for i in range(6):
        store.update("nodes", _node("a", i=str(i)))
    with pytest.raises(ApiError) as err:
        store.watch(NODES, None, EVERYTHING, FieldSelector(), since=first.rv, initial=False)
    assert (err.value.code, err.value.reason) == (410, "Expired")
    with pytest.raises(ApiError) as conflict:
        store.update("nodes", _node("a"), expect_rv=first.rv)
    assert conflict.value.code == 409


async def test_selector_transitions_and_slow_watchers() -> None:
    store = Store(watch_queue_size=10)
    selective = store.watch(NODES, None, parse_label_selector("pool=gpu"), FieldSelector(), since=None, initial=True)
    store.create("nodes", _node("a"))
    store.update("nodes", _node("a", pool="gpu"))
    store.update("nodes", _node("a", pool="cpu"))
    kinds = [line.split(b'"')[3] for line in selective.queue]
    assert kinds == [b"ADDED", b"DELETED"], "entering and leaving the selection"
    slow = store.watch(NODES, None, EVERYTHING, FieldSelector(), since=None, initial=True)
    for i in range(20):
        store.update("nodes", _node("a", i=str(i)))
    assert slow.closed and slow.overflowed, "a watcher that falls behind is closed, never blocking writers"
    assert store.watcher_count() == 2
    store.unwatch(slow)
    assert store.watcher_count() == 1


async def test_pods_by_node_index() -> None:
    store = Store()
    pod = {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "ns"}, "spec": {}}
    store.create("pods", pod)
    on_n1 = store.watch(PODS, None, EVERYTHING, parse_field_selector(PODS, "spec.nodeName=n1"), None, True)
    store.update("pods", {**pod, "spec": {"nodeName": "n1"}})
    assert [e.name for e in store.pods_on_node("n1")] == ["p"]
    assert len(on_n1.queue) == 1 and b'"ADDED"' in on_n1.queue[0]
    store.delete("pods", "ns", "p")
    assert store.pods_on_node("n1") == []
    assert b'"DELETED"' in on_n1.queue[-1]
