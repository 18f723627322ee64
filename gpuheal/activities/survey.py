"""A dry run's read of the cluster: the node, the pods a drain would move, the provider that would
reboot it. Reads only: no write to the cluster, no call to a provider."""

from __future__ import annotations

from kubernetes.aio import client

from gpuheal.activities.contract import implements
from gpuheal.activities.drain import pod_ref, pods_to_move
from gpuheal.activities.kube import read_node
from gpuheal.activities.providers import ProviderError
from gpuheal.activities.providers.selection import ProviderSet
from gpuheal.activities.repair import reboot_target
from gpuheal.domain import contracts, marks
from gpuheal.domain.steps import MachineRequest, NodeSurvey


class SurveyActivities:
    """Reads what a dry run says it would act on."""

    def __init__(self, api: client.ApiClient, providers: ProviderSet) -> None:
        self._core = client.CoreV1Api(api)
        self._providers = providers

    @implements(contracts.SURVEY)
    async def survey_node(self, request: MachineRequest) -> NodeSurvey:
        """The node as it is, its pods a drain would move, and the provider `request.provider` picks for it."""
        node = await read_node(self._core, request.node)
        if node is None:
            return NodeSurvey(node=request.node, exists=False)
        labels = dict((node.metadata.labels if node.metadata else None) or {})
        target = reboot_target(node, request.node, graceful=False)
        try:
            provider, problem = self._providers.choose(target, request.provider).name, ""
        except ProviderError as error:
            provider, problem = "", str(error)
        return NodeSurvey(
            node=request.node,
            exists=True,
            managed=labels.get(marks.MANAGED_LABEL) != "false",
            held=labels.get(marks.HOLD_LABEL) == "true",
            unschedulable=bool(node.spec and node.spec.unschedulable),
            labels=labels,
            pods=tuple(pod_ref(pod) for pod in await pods_to_move(self._core, request.node)),
            provider=provider,
            provider_id=target.provider_id,
            provider_problem=problem,
        )
