"""Orders written on the agent's node, answered in its conditions (gpuheal.domain.node_orders).

`watcher.NodeOrderWatcher` follows the node and has each order carried out once by the handler of
its kind (`watcher.OrderHandler`: the GPU reset's in gpuheal.agents.reset, the GPU check's in
gpuheal.agents.check); `node` is the Kubernetes side; `settings` the bounds of following the node.
"""

from gpuheal.agents.orders.settings import FollowSettings
from gpuheal.agents.orders.watcher import NodeOrderWatcher, OrderHandler, report

__all__ = ["FollowSettings", "NodeOrderWatcher", "OrderHandler", "report"]
