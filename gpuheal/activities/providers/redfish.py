"""The bare-metal provider: restarts a server through its BMC with Redfish `ComputerSystem.Reset`.

Which BMC: the node's `gpuheal.io/redfish-system` annotation holds the URL of its ComputerSystem
(`https://10.0.0.5/redfish/v1/Systems/1`); failing that, a JSON mapping file of node name to that URL
(`GPUHEAL_REDFISH_MAP`, e.g. a mounted ConfigMap). The annotation wins.

Credentials come from a directory mounted from a Kubernetes Secret (`GPUHEAL_REDFISH_CREDENTIALS_DIR`):
the files `username` and `password`, or `<bmc-host>.username` and `<bmc-host>.password` for a BMC
with credentials of its own (Secret keys cannot hold `/` or `:`, hence the host name without port).
They are read on every call, so a rotated Secret takes effect without a restart.

TLS is verified: against `GPUHEAL_REDFISH_CA_BUNDLE` when set, else requests' own chain
(`REQUESTS_CA_BUNDLE`, then the system trust). `GPUHEAL_REDFISH_INSECURE=true` turns verification
off for BMCs with self-signed certificates; it is off unless set, and plain `http://` URLs are
refused because the credentials would cross the network in clear text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import sushy
from sushy import exceptions as sushy_errors
from sushy.auth import BasicAuth
from sushy.resources.constants import ResetType

from gpuheal.activities.providers import RebootTarget, kit
from gpuheal.activities.providers.kit import Failure
from gpuheal.activities.providers.refusal import requests_never_sent
from gpuheal.domain import marks

SYSTEM_ANNOTATION = marks.REDFISH_SYSTEM_ANNOTATION
"""Node annotation holding the URL of the node's Redfish ComputerSystem."""

_ROOT = "/redfish/v1/"
_SYSTEMS = "/redfish/v1/Systems/"
_SHAPE = "https://<bmc>[:port]/redfish/v1/Systems/<id>"

# Redfish's privilege for ComputerSystem.Reset (DSP8011 privilege registry).
_RESET_PRIVILEGE = "ConfigureComponents"

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"", "false", "0", "no"})

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RedfishSettings:
    """Where credentials, trust and the node mapping come from; None leaves it to the defaults."""

    # Directory mounted from the Kubernetes Secret with `username` and `password` files.
    credentials_dir: Path | None = None
    # CA bundle (file or directory) the BMCs' certificates are checked against.
    ca_bundle: Path | None = None
    # Turn off certificate verification (self-signed BMC certificates). Off unless asked for.
    insecure: bool = False
    # JSON file mapping node name to its ComputerSystem URL, for nodes without the annotation.
    map_file: Path | None = None
    # sushy's own retries of server-side errors and lost connections. None: sushy would also send a
    # timed-out reset again, which the BMC may have carried out; Temporal retries the attempt with
    # backoff instead, asking again only after a refusal.
    retries: int = 0
    retry_delay: timedelta = timedelta(seconds=1)
    connect_timeout: timedelta = timedelta(seconds=10)
    read_timeout: timedelta = timedelta(seconds=30)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RedfishSettings:
        """Settings from gpuheal's `GPUHEAL_REDFISH_*` variables (Redfish has no standard ones)."""
        insecure_text = env.get("GPUHEAL_REDFISH_INSECURE", "").strip().lower()
        if insecure_text not in _TRUE | _FALSE:
            raise ValueError(f"GPUHEAL_REDFISH_INSECURE must be true or false, not {insecure_text!r}")
        insecure = insecure_text in _TRUE
        ca_bundle = _path(env.get("GPUHEAL_REDFISH_CA_BUNDLE"))
        if insecure and ca_bundle is not None:
            raise ValueError("set either GPUHEAL_REDFISH_CA_BUNDLE or GPUHEAL_REDFISH_INSECURE=true, not both")
        return cls(
            credentials_dir=_path(env.get("GPUHEAL_REDFISH_CREDENTIALS_DIR")),
            ca_bundle=ca_bundle,
            insecure=insecure,
            map_file=_path(env.get("GPUHEAL_REDFISH_MAP")),
        )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


@dataclass(frozen=True, slots=True)
class RedfishSystem:
    """A ComputerSystem URL taken apart: the BMC (base URL and root prefix) and the system's path."""

    url: str
    base_url: str  # "https://10.0.0.5:443"
    root_prefix: str  # "/redfish/v1/", or "/<proxy-prefix>/redfish/v1/"
    path: str  # "/redfish/v1/Systems/1"
    host: str  # "10.0.0.5", for per-BMC credentials

    @property
    def root(self) -> str:
        """The service root the client for this BMC is cached under."""
        return self.base_url + self.root_prefix


def parse_system_url(node: str, url: str) -> RedfishSystem:
    """Parse a ComputerSystem URL; a malformed one is a non-retryable error naming the node."""
    parts = urlsplit(url.strip())
    cut = parts.path.find(_SYSTEMS)
    identity = parts.path[cut + len(_SYSTEMS) :].rstrip("/") if cut >= 0 else ""
    problem = None
    if parts.scheme == "http":
        problem = "plain http would send the BMC credentials in clear text; use https"
    elif parts.scheme != "https" or not parts.hostname:
        problem = "it is not an https URL"
    elif not identity or "/" in identity or parts.query or parts.fragment:
        problem = "it does not name one ComputerSystem"
    if problem is not None:
        raise kit.fail(
            f"node {node}'s Redfish system {url!r} is malformed ({problem}); expected {_SHAPE} "
            f"in its {SYSTEM_ANNOTATION} annotation or the GPUHEAL_REDFISH_MAP file",
            retryable=False,
        )
    root_prefix = parts.path[:cut] + _ROOT
    return RedfishSystem(
        url=url.strip(),
        base_url=f"{parts.scheme}://{parts.netloc}",
        root_prefix=root_prefix,
        path=parts.path[:cut] + _SYSTEMS + identity,
        host=str(parts.hostname),
    )


class _SystemMap:
    """The node → system URL mapping file, re-read when it changes (a ConfigMap updated in place)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._systems: dict[str, str] = {}
        self._lock = threading.Lock()
        if path is not None:
            # A broken file at start is a configuration error the worker should not start with.
            self._systems = self._read(path)
            self._stamp = self._stat(path)

    def get(self, node: str) -> str | None:
        path = self._path
        if path is None:
            return None
        with self._lock:
            stamp = self._stat(path)
            if stamp != self._stamp:
                try:
                    self._systems = self._read(path)
                except ValueError as error:
                    # Keep serving the last good mapping rather than losing every node at once.
                    log.warning("keeping the previous Redfish mapping: %s", error, extra={"node": node})
                self._stamp = stamp
            return self._systems.get(node)

    @staticmethod
    def _stat(path: Path) -> tuple[int, int, int] | None:
        # The inode too: a ConfigMap volume swaps in a new file through a symlink.
        try:
            status = path.stat()
        except OSError:
            return None
        return status.st_ino, status.st_mtime_ns, status.st_size

    @staticmethod
    def _read(path: Path) -> dict[str, str]:
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"GPUHEAL_REDFISH_MAP {path} cannot be read as JSON: {error}") from error
        if not isinstance(loaded, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in loaded.items()
        ):
            raise ValueError(f"GPUHEAL_REDFISH_MAP {path} must be a JSON object of node name to system URL")
        return dict(loaded)


@dataclass(frozen=True, slots=True)
class _Credentials:
    username: str
    password: str
    source: str  # the files they came from, for messages (never the values)


class RedfishProvider(kit.CloudProvider[RedfishSystem]):
    """Restarts bare-metal nodes through their BMCs' Redfish ComputerSystem.Reset action."""

    name = "redfish"
    supports_graceful = True

    def __init__(self, settings: RedfishSettings | None = None) -> None:
        self._settings = settings or RedfishSettings()
        self._map = _SystemMap(self._settings.map_file)
        # One client per BMC service root, rebuilt when that BMC's credentials change.
        self._clients: kit.ClientCache[str, tuple[_Credentials, Any]] = kit.ClientCache()

    def owns(self, target: RebootTarget) -> bool:
        return bool(target.annotations.get(SYSTEM_ANNOTATION)) or self._map.get(target.node) is not None

    def locate(self, target: RebootTarget) -> RedfishSystem:
        url = target.annotations.get(SYSTEM_ANNOTATION) or self._map.get(target.node)
        if not url:
            raise kit.fail(
                f"node {target.node} names no Redfish system: annotate it with {SYSTEM_ANNOTATION}={_SHAPE} "
                "or add it to the GPUHEAL_REDFISH_MAP file",
                retryable=False,
            )
        return parse_system_url(target.node, url)

    async def restart(self, target: RebootTarget, system: RedfishSystem) -> str:
        """Ask the BMC for ComputerSystem.Reset.

        A ProviderError is `refused` when the reset cannot have reached the BMC (anything failing
        before it is posted: credentials, the service root, the system, its reset types) or when
        every post of it was answered with an error or never connected (`_Recorder` reports each).
        sushy posts again after a lost connection or a read timeout, so its last error alone does
        not tell.
        """
        return await self._call(target, system, lambda client: self._reset(client, system, target.graceful))

    async def requested_since(self, target: RebootTarget, since: datetime) -> bool | None:
        # Redfish keeps no standard record of reset requests: the action returns no resource to look
        # up later, LastResetTime (where a BMC has it) says when the system last reset, not that one
        # was asked for, and the log services that record resets (iDRAC's Lifecycle Log, iLO's IML,
        # OpenBMC's event log) differ in format and are not read by sushy, nor served by sushy-tools'
        # emulator. The repair activity then trusts its own record and the node's bootID.
        return None

    async def describe(self, target: RebootTarget) -> str:
        system = self.locate(target)
        return await self._call(target, system, lambda client: self._describe(client, system))

    # --- the blocking work, run in a thread -------------------------------------------------------

    def _reset(self, client: Any, system: RedfishSystem, graceful: bool) -> str:
        resource = client.get_system(system.path)
        # From ResetType@Redfish.AllowableValues or the action's @Redfish.ActionInfo. A BMC that
        # publishes neither gets every reset type from sushy (with a warning in the log): it then
        # answers for itself, with a 400 the error handling reports.
        allowed: set[ResetType] = resource.get_allowed_reset_system_values()
        offered = ", ".join(sorted(value.value for value in allowed)) or "none"
        note = ""
        reset = ResetType.FORCE_RESTART
        if graceful:
            if ResetType.GRACEFUL_RESTART in allowed:
                reset = ResetType.GRACEFUL_RESTART
            else:
                note = f" (GracefulRestart was asked for but the system allows only {offered})"
        if reset not in allowed:
            raise kit.fail(
                f"Redfish system {system.url} does not allow ComputerSystem.Reset {reset.value} "
                f"(ResetType@Redfish.AllowableValues: {offered}); restart the server another way",
                retryable=False,
            )
        resource.reset_system(reset)
        return f"Redfish system {system.url} accepted ComputerSystem.Reset {reset.value}{note}"

    def _describe(self, client: Any, system: RedfishSystem) -> str:
        resource = client.get_system(system.path)
        power = resource.power_state.value if resource.power_state is not None else "unknown"
        status = resource.status
        health = status.health.value if status is not None and status.health is not None else "unknown"
        state = status.state.value if status is not None and status.state is not None else None
        extra = f", State {state}" if state not in (None, "Enabled") else ""
        return f"Redfish system {system.url}: PowerState {power}, Status Health {health}{extra}"

    # --- plumbing -----------------------------------------------------------------------------------

    async def _call(self, target: RebootTarget, system: RedfishSystem, work: Callable[[Any], T]) -> T:
        # The Secret is read on every call, so a rotated one takes effect without a restart.
        credentials = await asyncio.to_thread(self._credentials, system)
        return await kit.call(
            lambda: work(self._client(system, credentials)),
            lambda error: _classify(error, target, system, credentials),
        )

    def _credentials(self, system: RedfishSystem) -> _Credentials:
        directory = self._settings.credentials_dir
        if directory is None:
            raise kit.fail(
                "GPUHEAL_REDFISH_CREDENTIALS_DIR is not set: mount the Secret holding the BMC's username and "
                f"password and point the variable at it (needed for {system.url})",
                retryable=False,
            )
        for prefix in (f"{system.host}.", ""):
            user_file, password_file = directory / f"{prefix}username", directory / f"{prefix}password"
            if user_file.is_file() or password_file.is_file():
                try:
                    # `kubectl create secret --from-file` keeps a file's trailing newline; it is no part of them.
                    return _Credentials(
                        user_file.read_text().rstrip("\r\n"),
                        password_file.read_text().rstrip("\r\n"),
                        f"{user_file} and {password_file}",
                    )
                except OSError as error:
                    raise kit.fail(
                        f"cannot read the Redfish credentials for {system.url} from the Secret mounted at "
                        f"{directory}: {error}",
                        retryable=False,
                    ) from error
        raise kit.fail(
            f"no Redfish credentials for {system.url}: the Secret mounted at {directory} (GPUHEAL_REDFISH_CREDENTIALS_DIR) "
            f"has neither {system.host}.username/{system.host}.password nor username/password",
            retryable=False,
        )

    def _client(self, system: RedfishSystem, credentials: _Credentials) -> Any:
        return self._clients.get(
            system.root,
            lambda: (credentials, self._connect(system, credentials)),
            keep=lambda cached: cached[0] == credentials,
        )[1]

    def _connect(self, system: RedfishSystem, credentials: _Credentials) -> Any:
        settings = self._settings
        verify: bool | str = False if settings.insecure else str(settings.ca_bundle) if settings.ca_bundle else True
        # Basic authentication rather than sushy's default Redfish session: a session holds one of
        # the BMC's few session slots for as long as the client is cached and expires on its own
        # schedule, while basic authentication is stateless and is refused at once when the Secret
        # is wrong. Constructing the client fetches the service root.
        client = sushy.Sushy(
            system.base_url,
            root_prefix=system.root_prefix,
            verify=verify,
            auth=BasicAuth(username=credentials.username, password=credentials.password),
            server_side_retries=settings.retries,
            server_side_retries_delay=settings.retry_delay.total_seconds(),
            connect_timeout=settings.connect_timeout.total_seconds(),
            read_timeout=settings.read_timeout.total_seconds(),
        )
        # sushy sends through its connector's requests session; the recorder sees every try of a reset.
        client._conn._session.mount("https://", _Recorder())
        return client


class _Recorder(requests.adapters.HTTPAdapter):
    """requests' own adapter, reporting to the reboot being asked whether each request it sends could have acted."""

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        if request.method in ("GET", "HEAD"):
            return super().send(request, stream, timeout, verify, cert, proxies)
        try:
            response = super().send(request, stream, timeout, verify, cert, proxies)
        except Exception as error:
            if not requests_never_sent(error):
                kit.reached()
            raise
        kit.answered(response.status_code)
        return response


def _classify(
    error: Exception, target: RebootTarget, system: RedfishSystem, credentials: _Credentials
) -> Failure | None:
    """Say what went wrong in words a person can act on, and whether trying again can help.

    Whether a reset reached the BMC is `_Recorder`'s to say: it sees every post.
    """
    if not isinstance(error, sushy_errors.SushyError):
        return None
    retryable = False
    if isinstance(error, sushy_errors.ResourceNotFoundError):
        message = (
            f"Redfish system {system.url} not found (HTTP 404 {error.code}); check node {target.node}'s "
            f"{SYSTEM_ANNOTATION} annotation or its GPUHEAL_REDFISH_MAP entry"
        )
    elif isinstance(error, sushy_errors.AccessError) and error.status_code == 403:
        message = (
            f"Redfish system {system.url} refused the user from {credentials.source} (HTTP 403 "
            f"{error.code}): give that BMC account the {_RESET_PRIVILEGE} privilege (an Operator or "
            "Administrator role), or put another account in the Secret"
        )
    elif isinstance(error, sushy_errors.AccessError):
        message = (
            f"Redfish system {system.url} rejected the credentials from {credentials.source} (HTTP "
            f"{error.status_code} {error.code}): fix the username and password in the Secret mounted there"
        )
    elif isinstance(error, sushy_errors.ServerSideError):
        message = (
            f"Redfish system {system.url} is unavailable (HTTP {error.status_code} {error.code}: "
            f"{error.detail or 'no detail'}); retrying"
        )
        retryable = True
    elif isinstance(error, sushy_errors.ConnectionError) and isinstance(
        error.__context__, requests.exceptions.SSLError
    ):
        message = (
            f"TLS verification of the BMC at {system.base_url} failed for {system.url} ({error.__context__}); "
            "give its CA in GPUHEAL_REDFISH_CA_BUNDLE (or, for a self-signed certificate you accept, "
            "GPUHEAL_REDFISH_INSECURE=true)"
        )
    elif isinstance(error, sushy_errors.ConnectionError):
        message = f"BMC unreachable for Redfish system {system.url}: {error}"
        retryable = True
    elif isinstance(error, sushy_errors.HTTPError):
        message = (
            f"Redfish system {system.url} answered HTTP {error.status_code} {error.code}: {error.detail or 'no detail'}"
        )
        # 429 is a throttling BMC; any other 4xx is a request the BMC will refuse again.
        retryable = error.status_code == 429
    elif isinstance(error, sushy_errors.MissingActionError):
        message = f"Redfish system {system.url} offers no #ComputerSystem.Reset action; restart the server another way"
    else:
        message = f"Redfish system {system.url}: {error}"
    return Failure(message, retryable=retryable)
