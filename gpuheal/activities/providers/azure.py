"""Azure: restarts a node's virtual machine through Azure Resource Manager (azure-mgmt-compute).

The node's providerID names the machine, either a standalone VM or an instance of a VM scale set
(how AKS node pools run), in the shapes AKS writes::

    azure:///subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines/<name>
    azure:///subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachineScaleSets/<ss>/virtualMachines/<id>

Segment names are matched without regard to case, as ARM does. The restart is a long-running
operation; `reboot` follows it until ARM reports it done.

Credentials come only from azure-identity's `DefaultAzureCredential`: workload identity in AKS
(the webhook sets AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE), a managed identity
elsewhere. The identity needs `Microsoft.Compute/virtualMachines/restart/action` (standalone VMs) or
`Microsoft.Compute/virtualMachineScaleSets/virtualMachines/restart/action` (scale-set instances),
plus the matching `…/instanceView/read` for `describe`; the built-in "Virtual Machine Contributor"
role has them. Sovereign clouds are chosen with azure-core's standard AZURE_SDK_CLOUD_CONF.
"""

from __future__ import annotations

import os
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineResponse
from azure.core.polling import LROPoller
from azure.identity import DefaultAzureCredential
from azure.mgmt.compute import ComputeManagementClient

from gpuheal.activities.providers import RebootTarget, kit
from gpuheal.activities.providers.kit import Failure, one_line
from gpuheal.activities.providers.refusal import certificate_rejected, linked, refusing_status

_ID = re.compile(
    r"^azure:///subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.compute/"
    r"(?:virtualmachinescalesets/(?P<ss>[^/]+)/virtualmachines/(?P<instance>[^/]+)|virtualmachines/(?P<vm>[^/]+))"
    r"/?$",
    re.IGNORECASE,
)
_POLL_INTERVAL = timedelta(seconds=5)
_EXPECTED = (
    "azure:///subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines/<name> or "
    "…/virtualMachineScaleSets/<scale-set>/virtualMachines/<instance-id>"
)


# Per-operation settings for a request that must not be repeated by the SDK.
_ONCE: dict[str, Any] = {"retry_total": 0}


@dataclass(frozen=True, slots=True)
class AzureSettings:
    """Overrides of the SDK's standard settings; None leaves the choice to azure-core and requests."""

    # ARM's base URL (GPUHEAL_AZURE_ENDPOINT); None: the cloud AZURE_SDK_CLOUD_CONF names (public by default).
    endpoint: str | None = None
    # A CA bundle path or False, for the ARM client and the credential; None: requests' REQUESTS_CA_BUNDLE
    # or the system's trust store.
    connection_verify: str | bool | None = None
    # The time between polls of the restart's operation when ARM sends no Retry-After
    # (GPUHEAL_AZURE_POLL_INTERVAL, in seconds). The SDK's own default, 30 s, is long next to a restart.
    polling_interval: timedelta = _POLL_INTERVAL
    # How long `reboot` follows the operation before giving up (the activity allows 15 minutes).
    operation_timeout: timedelta = timedelta(minutes=10)
    # azure-core's retries of throttled and failed requests. Few, because Temporal retries the
    # activity with backoff; the SDK must not sit on a 429 for minutes.
    retry_total: int = 2

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AzureSettings:
        """gpuheal's own variables; the credential, CA bundle and cloud use the SDKs' standard ones."""
        interval = env.get("GPUHEAL_AZURE_POLL_INTERVAL")
        try:
            polling_interval = timedelta(seconds=float(interval)) if interval else _POLL_INTERVAL
        except ValueError as error:
            raise ValueError(f"GPUHEAL_AZURE_POLL_INTERVAL must be a number of seconds, not {interval!r}") from error
        return cls(endpoint=env.get("GPUHEAL_AZURE_ENDPOINT") or None, polling_interval=polling_interval)


@dataclass(frozen=True, slots=True)
class AzureMachine:
    """The VM a providerID names: standalone, or an instance of a scale set."""

    subscription: str
    resource_group: str
    vm: str | None = None
    scale_set: str | None = None
    instance_id: str | None = None

    @classmethod
    def parse(cls, target: RebootTarget) -> AzureMachine:
        """The machine behind the node; a providerID of another shape is a non-retryable error."""
        match = _ID.match(target.provider_id)
        if match is None:
            raise kit.not_located(target, "an Azure VM", _EXPECTED)
        return cls(match["sub"], match["rg"], vm=match["vm"], scale_set=match["ss"], instance_id=match["instance"])

    @property
    def label(self) -> str:
        if self.scale_set is not None:
            return f"VM instance {self.instance_id} of scale set {self.scale_set}"
        return f"VM {self.vm}"

    @property
    def restart_action(self) -> str:
        return f"{self._resource_type}/restart/action"

    @property
    def read_action(self) -> str:
        return f"{self._resource_type}/instanceView/read"

    @property
    def _resource_type(self) -> str:
        if self.scale_set is not None:
            return "Microsoft.Compute/virtualMachineScaleSets/virtualMachines"
        return "Microsoft.Compute/virtualMachines"


class AzureProvider(kit.CloudProvider[AzureMachine]):
    """Restarts Azure VMs and scale-set instances with azure-mgmt-compute's synchronous client, in a thread."""

    name = "azure"
    scheme = "azure://"
    # ARM has one restart; it has no graceful variant to ask for.

    def __init__(self, settings: AzureSettings | None = None) -> None:
        self._settings = settings or AzureSettings()
        self._credential: DefaultAzureCredential | None = None
        self._credential_lock = threading.Lock()
        self._clients: kit.ClientCache[str, ComputeManagementClient] = kit.ClientCache()

    def owns(self, target: RebootTarget) -> bool:
        return target.provider_id.lower().startswith(self.scheme)

    def locate(self, target: RebootTarget) -> AzureMachine:
        return AzureMachine.parse(target)

    async def restart(self, target: RebootTarget, machine: AzureMachine) -> str:
        """Restart the VM and follow ARM's operation until it reports success.

        ARM's restart has no graceful variant to ask for; `target.graceful` changes nothing.
        A ProviderError is `refused` only when the restart request cannot have reached ARM or ARM
        answered it with an error (see `_note_restart` and `_unsent`); once ARM has accepted it,
        nothing is refused.
        """
        classify = self._classifier(target, machine, "restart")

        def begin() -> LROPoller[None]:
            # The restart is sent once: azure-core would also retry a timed-out POST, which ARM may have
            # carried out. Temporal retries the attempt instead, asking again only after a refusal.
            client = self._client(machine.subscription)
            if machine.scale_set is not None and machine.instance_id is not None:
                return client.virtual_machine_scale_set_vms.begin_restart(
                    machine.resource_group,
                    machine.scale_set,
                    machine.instance_id,
                    raw_response_hook=_note_restart,
                    **_ONCE,
                )
            return client.virtual_machines.begin_restart(
                machine.resource_group, str(machine.vm), raw_response_hook=_note_restart, **_ONCE
            )

        poller = await kit.call(begin, classify)

        async def wait(left: timedelta) -> LROPoller[None]:
            await kit.call(lambda: poller.result(timeout=left.total_seconds()), classify)
            return poller

        timeout = self._settings.operation_timeout
        # The poller paces its own polls (ARM's Retry-After, else `polling_interval`): no pause of ours.
        await kit.follow_operation(
            poller,
            wait,
            LROPoller.done,
            timeout=timeout,
            interval=timedelta(0),
            overdue=lambda _: (
                f"Azure accepted the restart of {machine.label} in {machine.resource_group}, but its "
                f"operation was still {poller.status()} after {timeout.total_seconds():.0f}s"
            ),
        )
        return f"Azure restarted {machine.label} in {machine.resource_group} (operation {poller.status()})"

    async def requested_since(self, target: RebootTarget, since: datetime) -> bool | None:
        """None: ARM keeps no record here that can say whether a restart was asked for.

        The instance view's ProvisioningState carries the time the VM's latest operation of any kind
        ended (an extension update, a tag or disk change, a restart someone else asked for) without
        naming it, and shows nothing at all while one runs; reading a restart into it would be a
        guess. The record that does name it, the Activity Log, needs azure-mgmt-monitor and
        Microsoft.Insights read access, and lags minutes behind. So the repair activity relies on its
        own record and the node's bootID instead, and never restarts a second time on a guess.
        """
        self.locate(target)
        return None

    async def describe(self, target: RebootTarget) -> str:
        """ARM's instance view in one line: "Azure VM x in rg: PowerState/running, ProvisioningState/succeeded"."""
        machine = self.locate(target)
        return await kit.call(
            lambda: self._describe(machine), self._classifier(target, machine, "read the instance view of")
        )

    def close(self) -> None:
        """Close the cached clients and the credential."""
        for client in self._clients.drain():
            client.close()
        with self._credential_lock:
            if self._credential is not None:
                self._credential.close()
                self._credential = None

    def _describe(self, machine: AzureMachine) -> str:
        client = self._client(machine.subscription)
        if machine.scale_set is not None and machine.instance_id is not None:
            statuses = client.virtual_machine_scale_set_vms.get_instance_view(
                machine.resource_group, machine.scale_set, machine.instance_id
            ).statuses
        else:
            statuses = client.virtual_machines.instance_view(machine.resource_group, str(machine.vm)).statuses
        codes = [status.code for status in statuses or [] if status.code]
        # The power state first: it is what a person looks for when a node did not come back.
        codes.sort(key=lambda code: (not code.startswith("PowerState/"), not code.startswith("ProvisioningState/")))
        return f"Azure {machine.label} in {machine.resource_group}: {', '.join(codes) or 'no statuses reported'}"

    def _client(self, subscription: str) -> ComputeManagementClient:
        return self._clients.get(
            subscription,
            lambda: ComputeManagementClient(
                self._credential_chain(),
                subscription,
                base_url=self._settings.endpoint,
                polling_interval=self._settings.polling_interval.total_seconds(),
                retry_total=self._settings.retry_total,
                connection_timeout=10,
                read_timeout=60,
                **self._verify(),
            ),
        )

    def _credential_chain(self) -> TokenCredential:
        with self._credential_lock:
            if self._credential is None:
                self._credential = DefaultAzureCredential(**self._verify())
            return self._credential

    def _verify(self) -> dict[str, Any]:
        verify = self._settings.connection_verify
        return {} if verify is None else {"connection_verify": verify}

    @staticmethod
    def _classifier(target: RebootTarget, machine: AzureMachine, doing: str) -> kit.Classifier:
        return lambda error: _classify(error, target, machine, doing)


def _note_restart(response: PipelineResponse[Any, Any]) -> None:
    """Report every answer to the restart POST: azure-core retries it after 429, 5xx and Retry-After
    answers, so the last error alone does not say what the earlier ones were."""
    if response.http_request.url.split("?", 1)[0].endswith("/restart"):
        kit.answered(response.http_response.status_code)


def _unsent(error: AzureError | ValueError) -> bool:
    """Whether a failed request cannot have been acted on.

    True for an error answer (ARM's own, not a gateway's 502 or 504), a request never sent
    (azure-core's ServiceRequestError, unless a TLS error that can also come after sending), or no
    request at all (the credential chain or the client failed first). A request sent without an
    answer (ServiceResponseError) may have been acted on.
    """
    if isinstance(error, ValueError):
        return True
    if isinstance(error, ClientAuthenticationError) and error.response is None:
        return True  # the credential chain found no token: nothing went to ARM
    if isinstance(error, HttpResponseError):
        return error.response is not None and error.status_code is not None and refusing_status(error.status_code)
    if isinstance(error, ServiceRequestError):
        return not _tls(error) or certificate_rejected(error)
    return False


def _tls(error: BaseException) -> bool:
    """Whether TLS failed somewhere in the error's chain."""
    return any(isinstance(item, ssl.SSLError | requests.exceptions.SSLError) for item in linked(error))


def _classify(error: Exception, target: RebootTarget, machine: AzureMachine, doing: str) -> Failure | None:
    """An SDK failure (or a credential chain refusing its settings) as a Failure a person can act on."""
    if isinstance(error, AzureError):
        failure = _translate(error, target, machine, doing)
    elif isinstance(error, ValueError):
        # DefaultAzureCredential refuses a bad AZURE_TOKEN_CREDENTIALS when it is built.
        failure = Failure(f"cannot {doing} Azure {machine.label} of node {target.node}: {error}", retryable=False)
    else:
        return None
    return replace(failure, unsent=_unsent(error))


def _translate(error: AzureError, target: RebootTarget, machine: AzureMachine, doing: str) -> Failure:
    """An SDK error as a ProviderError a person can act on: what failed, ARM's code, what to do."""
    what = f"Azure {machine.label}"
    where = f"{what} in resource group {machine.resource_group}"
    if isinstance(error, ClientAuthenticationError) and error.response is None:
        # Raised by the credential chain before any request reached ARM.
        return Failure(
            f"cannot {doing} {where} for node {target.node}: DefaultAzureCredential found no usable credential "
            "(in AKS, enable workload identity for gpuheal's service account: the "
            "azure.workload.identity/use label and the azure.workload.identity/client-id annotation): "
            f"{one_line(error.message)}",
            retryable=False,
        )
    if isinstance(error, HttpResponseError):
        status = error.status_code
        code = (error.error.code if error.error is not None else None) or error.reason or "no code"
        said = one_line(error.error.message if error.error is not None and error.error.message else error.message)
        if status is None or status < 400:
            # The operation itself ended in failure (ARM answered 200 with status "Failed").
            return Failure(f"Azure's operation to {doing} {where} failed ({code}): {said}", retryable=False)
        if status == 429 or status == 408 or status >= 500:
            return Failure(f"ARM answered {status} ({code}) to {doing} {where}: {said}", retryable=True)
        if status == 404:
            return Failure(
                f"{what} not found in resource group {machine.resource_group} of subscription "
                f"{machine.subscription} ({code}); check node {target.node}'s providerID {target.provider_id}",
                retryable=False,
            )
        if status == 403:
            action = machine.restart_action if doing == "restart" else machine.read_action
            client_id = os.environ.get("AZURE_CLIENT_ID")
            identity = f"the workload identity (client id {client_id})" if client_id else "gpuheal's Azure identity"
            return Failure(
                f"{identity} may not {doing} {where} ({code}): grant it {action} on the VM, its scale set or "
                f"resource group (the Virtual Machine Contributor role has it); ARM said: {said}",
                retryable=False,
            )
        if status == 401:
            return Failure(
                f"ARM rejected gpuheal's Azure credential to {doing} {where} (401 {code}); check the workload "
                f"identity's federated credential, tenant and client id: {said}",
                retryable=False,
            )
        return Failure(f"ARM refused to {doing} {where} ({status} {code}): {said}", retryable=False)
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return Failure(f"could not reach ARM to {doing} {where}: {one_line(str(error))}", retryable=True)
    return Failure(f"Azure SDK error to {doing} {where}: {one_line(str(error))}", retryable=True)
