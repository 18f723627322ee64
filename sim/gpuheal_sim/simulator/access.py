"""Access control for the simulated API server: who calls, what they may do, what admission allows.

``AccessControl`` joins the parts the API server runs on every request, in its order: authentication
(``auth``: 401 for a token nobody issued), authorization (``rbac``: 403 with upstream's message from
``staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go``) and, for writes,
validating admission (``admission``). It loads what a cluster operator would apply — ServiceAccounts,
ClusterRoles, ClusterRoleBindings, Roles, RoleBindings, ValidatingAdmissionPolicies and their bindings
— from multi-document YAML (what ``helm template`` prints); any other kind is refused.

It also records every authorized request as an ``Access`` (user, verb, API group, resource with its
subresource), so a test can ask which permissions a component really used. The simulator's own
controllers, kubelets and node lifecycle write through the registry directly: they are not API
clients and none of this applies to them.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

import yaml  # type: ignore[import-untyped]

from . import errors
from .admission import POLICY_KINDS, AdmissionRequest, ValidatingAdmission
from .auth import Authenticator, Unauthenticated, UserInfo
from .jsonvalues import JsonDict
from .rbac import RBAC_KINDS, Authorizer
from .requestinfo import RequestInfo
from .store import Store

ACCESS_KINDS = RBAC_KINDS | POLICY_KINDS | {"ServiceAccount"}


@dataclass(frozen=True)
class Access:
    """One kind of request a user made: ``Access(user, "patch", "", "nodes/status")``.

    Non-resource requests (discovery, ``/version``) have an empty ``resource`` and their ``path``.
    """

    user: str
    verb: str
    group: str
    resource: str
    path: str = ""


@dataclass(frozen=True)
class Denial:
    user: str
    info: RequestInfo
    message: str


def parse_manifests(text: str) -> list[JsonDict]:
    """The objects of a multi-document YAML text (empty documents skipped)."""
    docs: list[JsonDict] = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        if not isinstance(doc, dict) or not doc.get("kind"):
            raise ValueError(f"not a Kubernetes object: {str(doc)[:80]!r}")
        docs.append(doc)
    return docs


def forbidden(user: UserInfo, info: RequestInfo, reason: str) -> errors.ApiError:
    """The 403 of an unauthorized request: ``responsewriters.Forbidden`` and ``apierrors.NewForbidden``."""
    if not info.is_resource_request:
        text = f'User "{user.name}" cannot {info.verb} path "{info.path}"'
    elif info.namespace:
        text = (
            f'User "{user.name}" cannot {info.verb} resource "{info.combined_resource}" in API group '
            f'"{info.api_group}" in the namespace "{info.namespace}"'
        )
    else:
        text = (
            f'User "{user.name}" cannot {info.verb} resource "{info.combined_resource}" in API group '
            f'"{info.api_group}" at the cluster scope'
        )
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if reason:
        text = f"{text}: {reason}"
    qualified = f"{info.resource}.{info.api_group}" if info.api_group else info.resource
    details: JsonDict = {}
    if info.name:
        details["name"] = info.name
    if info.api_group:
        details["group"] = info.api_group
    if info.resource:
        details["kind"] = info.resource
    if not qualified:
        message = f"forbidden: {text}"
    elif not info.name:
        message = f"{qualified} is forbidden: {text}"
    else:
        message = f'{qualified} "{info.name}" is forbidden: {text}'
    return errors.ApiError(403, "Forbidden", message, details, keep_empty_details=True)


class AccessControl:
    """Authentication, RBAC and validating admission policies of one simulated cluster."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.authenticator = Authenticator(store)
        self.authorizer = Authorizer()
        self.admission = ValidatingAdmission(self._namespace_labels, self._namespace_object)
        self.accesses: Counter[Access] = Counter()
        # The latest refusals (bounded: a long-running fleet keeps only the most recent).
        self.denials: deque[Denial] = deque(maxlen=10_000)
        self._namespaces: set[str] = set()

    def _namespace_object(self, name: str) -> JsonDict | None:
        entry = self._store.get("namespaces", "", name)
        return entry.obj if entry is not None else None

    def _namespace_labels(self, name: str) -> dict[str, str] | None:
        obj = self._namespace_object(name)
        return dict((obj.get("metadata") or {}).get("labels") or {}) if obj is not None else None

    # --- loading -----------------------------------------------------------------------------------

    def load_yaml(self, text: str) -> None:
        self.load(parse_manifests(text))

    def load(self, docs: Iterable[JsonDict]) -> None:
        rbac: list[JsonDict] = []
        policies: list[JsonDict] = []
        for doc in docs:
            kind = doc.get("kind")
            namespace = str((doc.get("metadata") or {}).get("namespace") or "")
            if kind == "ServiceAccount":
                if doc.get("apiVersion") != "v1" or not namespace:
                    raise ValueError("a ServiceAccount is a namespaced v1 object")
                self.authenticator.add_service_account(namespace, str(doc["metadata"]["name"]))
            elif kind in RBAC_KINDS:
                rbac.append(doc)
            elif kind in POLICY_KINDS:
                policies.append(doc)
            else:
                raise ValueError(f"the simulated API server loads only {sorted(ACCESS_KINDS)}, not {kind!r}")
            if namespace:
                self._namespaces.add(namespace)
        self.authorizer.load(rbac)
        self.admission.load(policies)

    def namespaces(self) -> set[str]:
        """The namespaces the loaded objects live in (they must exist in the cluster)."""
        return set(self._namespaces)

    # --- per request -------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None, path: str) -> UserInfo:
        try:
            return self.authenticator.authenticate(authorization, path)
        except Unauthenticated:
            raise errors.unauthorized() from None

    def authorize(self, user: UserInfo, info: RequestInfo) -> None:
        """Record an allowed request, or raise its 403."""
        decision = self.authorizer.authorize(user, info)
        if not decision.allowed:
            error = forbidden(user, info, decision.reason)
            self.denials.append(Denial(user.name, info, error.message))
            raise error
        if info.is_resource_request:
            self.accesses[Access(user.name, info.verb, info.api_group, info.combined_resource)] += 1
        else:
            self.accesses[Access(user.name, info.verb, "", "", info.path)] += 1

    def admit(self, request: AdmissionRequest) -> list[str]:
        return self.admission.validate(request)

    def used_by(self, user: str | None = None) -> set[Access]:
        return {a for a in self.accesses if user is None or a.user == user}
