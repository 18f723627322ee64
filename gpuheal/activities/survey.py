"""Reads of the cluster that change nothing: a dry run's (the node, the pods a drain would move, the
provider that would reboot it), and the provider named before a reboot for its step's summary. No
write to the cluster, no call to a provider."""

from __future__ import annotations

from kubernetes.aio import client

from gpuheal.activities.contract import implements
from gpuheal.activities.drain import pod_ref, pods_to_move
from gpuheal.activities.kube import read_node
from gpuheal.activities.nodes import was_cordoned_before
from gpuheal.activities.providers import MachineReplacer, ProviderError, RebootProvider
from gpuheal.activities.providers.selection import ProviderSet
from gpuheal.activities.repair import reboot_target
from gpuheal.domain import contracts, marks
from gpuheal.domain.steps import MAX_SURVEYED_PODS, MachineRequest, NodeSurvey, PodRef, ProviderNamed
from gpuheal.policyfile import WorkerPolicy


class SurveyActivities:
    """Reads what a dry run says it would act on."""

    def __init__(self, api: client.ApiClient, providers: ProviderSet, policy: WorkerPolicy) -> None:
        self._core = client.CoreV1Api(api)
        self._providers = providers
        self._policy = policy

    @implements(contracts.NAME_PROVIDER)
    async def name_reboot_provider(self, request: MachineRequest) -> ProviderNamed:
        """The provider `request.provider` picks for the node, and the machine it knows it by; empty
        where the node is gone or no provider owns it (the reboot step itself says why)."""
        node = await read_node(self._core, request.node)
        if node is None:
            return ProviderNamed()
        target = reboot_target(node, request.node, graceful=False)
        try:
            provider = self._providers.choose(target, request.provider)
        except ProviderError:
            return ProviderNamed(machine=target.provider_id)
        return ProviderNamed(provider=provider.name, machine=target.provider_id)

    @implements(contracts.SURVEY)
    async def survey_node(self, request: MachineRequest) -> NodeSurvey:
        """The node as it is, its pods a drain would move, and the provider `request.provider` picks for it."""
        node = await read_node(self._core, request.node)
        if node is None:
            return NodeSurvey(node=request.node, exists=False)
        labels = dict((node.metadata.labels if node.metadata else None) or {})
        target = reboot_target(node, request.node, graceful=False)
        provider: RebootProvider | None = None
        problem = ""
        try:
            provider = self._providers.choose(target, request.provider)
        except ProviderError as error:
            problem = str(error)
        pods = await pods_to_move(self._core, request.node)
        going: list[PodRef] = []
        staying: list[PodRef] = []
        for pod in pods:
            terminating = pod.metadata is not None and pod.metadata.deletion_timestamp is not None
            (going if terminating else staying).append(pod_ref(pod))
        return NodeSurvey(
            node=request.node,
            exists=True,
            managed=labels.get(marks.MANAGED_LABEL) != "false",
            held=marks.on_hold(labels),
            cordoned_before=was_cordoned_before(node),
            labels=labels,
            governed=self._policy.fleet.governed,
            pods=tuple(staying[:MAX_SURVEYED_PODS]),
            terminating=tuple(going[:MAX_SURVEYED_PODS]),
            pod_count=len(pods),
            provider=provider.name if provider is not None else "",
            provider_id=target.provider_id,
            provider_problem=problem,
            graceful=provider is not None and provider.supports_graceful,
            reboots=provider is None or provider.expects_new_boot,
            replaces=isinstance(provider, MachineReplacer),
        )
