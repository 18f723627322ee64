"""Every request gpuheal's worker and agent make to the Kubernetes API, as (verb, API group, resource).

The chart must grant exactly these (tests/helm/test_chart.py) and a remediation run end to end may
use nothing else (tests/integration/test_permissions.py). A new API call in the code means a new
line here and a new rule in the chart; one line per permission, with the code that needs it.
"""

from __future__ import annotations

Permission = tuple[str, str, str]

WORKER: frozenset[Permission] = frozenset(
    {
        ("get", "", "nodes"),  # activities/kube.py read_node: every step reads the node first
        ("patch", "", "nodes"),  # activities/kube.py merge_patch_node: taint, cordon, annotations, release
        ("list", "", "nodes"),  # activities/node_wait.py wait_for_node: the node (fieldSelector metadata.name)
        ("watch", "", "nodes"),  # activities/node_wait.py wait_for_node: watched from the list's version
        ("list", "", "pods"),  # activities/drain.py: the pods on the node (fieldSelector spec.nodeName)
        ("delete", "", "pods"),  # activities/drain.py: pods whose drain timed out (DeleteAfterTimeout)
        ("create", "", "pods/eviction"),  # activities/drain.py: the Eviction API
        ("get", "policy", "poddisruptionbudgets"),  # activities/drain.py: the budget a refused eviction names
    }
)

AGENT: frozenset[Permission] = frozenset(
    {
        ("get", "", "nodes"),  # agents/orders/node.py NodeApi.get
        ("list", "", "nodes"),  # agents/orders/node.py NodeApi.list (fieldSelector metadata.name)
        ("watch", "", "nodes"),  # agents/orders/node.py NodeApi.watch: the orders (GPU reset, GPU check)
        ("patch", "", "nodes/status"),  # GpuHealthy (publisher/kubernetes.py) and GpuReset (reset/node.py)
        ("create", "", "events"),  # publisher/kubernetes.py record_event: core/v1 Events about the node
    }
)

# Where the agent records its node's Events (publisher/kubernetes.py KubernetesReporter, as the
# kubelet does), and what it is granted there only (a Role); the rest of AGENT is cluster-wide.
AGENT_EVENTS_NAMESPACE = "default"
AGENT_IN_EVENTS_NAMESPACE: frozenset[Permission] = frozenset({("create", "", "events")})
AGENT_CLUSTER_WIDE: frozenset[Permission] = AGENT - AGENT_IN_EVENTS_NAMESPACE


def granted(role: dict[str, object]) -> set[Permission]:
    """The (verb, group, resource) triples a rendered ClusterRole grants."""
    out: set[Permission] = set()
    for rule in role["rules"]:  # type: ignore[attr-defined]
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((verb, group, resource))
    return out
