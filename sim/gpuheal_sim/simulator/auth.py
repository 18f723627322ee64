"""Who is calling: bearer tokens mapped to users, as the API server's authenticators do.

Three kinds of caller reach the simulated API server:

* the cluster admin (the token in the kubeconfig the simulator writes): user ``kubernetes-admin`` in
  ``system:masters``, like the credentials kubeadm writes to ``admin.conf``;
* service accounts, with tokens the simulator issues on request (``issue``), as the TokenRequest API
  does: user ``system:serviceaccount:<namespace>:<name>``, groups ``system:serviceaccounts``,
  ``system:serviceaccounts:<namespace>`` and ``system:authenticated``, uid the ServiceAccount's uid. A
  token bound to a Node or to a Pod carries the binding in the user's extra
  (``authentication.kubernetes.io/node-name``, ``node-uid``, ``pod-name``, ``pod-uid``) and a
  ``credential-id``, and stops working once the object it is bound to is gone or was replaced
  (``pkg/serviceaccount/claims.go``, ``staging/src/k8s.io/apiserver/pkg/authentication/serviceaccount/util.go``);
* anonymous requests, without an ``Authorization`` header, only for the health and version endpoints
  (the ``anonymous.conditions`` of the structured authentication configuration); anywhere else they
  are 401, and so is every request with a token nobody issued.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from .store import Store
from .timestamps import parse_rfc3339, utcnow

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
ALL_SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"
AUTHENTICATED_GROUP = "system:authenticated"
UNAUTHENTICATED_GROUP = "system:unauthenticated"
MASTERS_GROUP = "system:masters"

CREDENTIAL_ID_KEY = "authentication.kubernetes.io/credential-id"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"
NODE_UID_KEY = "authentication.kubernetes.io/node-uid"
POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"

# Paths anonymous requests may reach (what kubeadm-style clusters expose through system:public-info-viewer).
ANONYMOUS_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", "/version/"})
# claims.go: a token bound to a pod stays valid until 60 seconds past the pod's deletionTimestamp.
_DELETED_GRACE = timedelta(seconds=60)


@dataclass(frozen=True)
class UserInfo:
    """An authenticated user, as ``user.Info`` describes one: name, uid, groups and extra."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def request_view(self) -> dict[str, object]:
        """The user as ``authentication/v1.UserInfo`` serialises it (empty fields omitted)."""
        view: dict[str, object] = {}
        if self.name:
            view["username"] = self.name
        if self.uid:
            view["uid"] = self.uid
        if self.groups:
            view["groups"] = list(self.groups)
        if self.extra:
            view["extra"] = {k: list(v) for k, v in self.extra.items()}
        return view


ADMIN = UserInfo("kubernetes-admin", groups=(MASTERS_GROUP, AUTHENTICATED_GROUP))
ANONYMOUS = UserInfo("system:anonymous", groups=(UNAUTHENTICATED_GROUP,))


def service_account_username(namespace: str, name: str) -> str:
    """``system:serviceaccount:<namespace>:<name>`` (``serviceaccount.MakeUsername``)."""
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


@dataclass(frozen=True)
class BoundObject:
    """What a token is bound to: a Node, or a Pod (and the node it runs on)."""

    kind: str
    name: str
    uid: str
    namespace: str = ""
    node_name: str = ""
    node_uid: str = ""


@dataclass(frozen=True)
class _Credential:
    user: UserInfo
    bound: BoundObject | None = None


class Unauthenticated(Exception):
    """The request's credentials name nobody (HTTP 401)."""


class Authenticator:
    """Bearer tokens to users; service-account tokens are issued here and checked against the store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._tokens: dict[str, _Credential] = {}
        # (namespace, name) -> uid of the ServiceAccounts that exist.
        self.service_accounts: dict[tuple[str, str], str] = {}

    def add_token(self, token: str, user: UserInfo) -> None:
        """Accept ``token`` as ``user`` (a static token, like ``--token-auth-file``)."""
        self._tokens[token] = _Credential(user)

    def add_service_account(self, namespace: str, name: str, uid: str | None = None) -> str:
        return self.service_accounts.setdefault((namespace, name), uid or str(uuid.uuid4()))

    def issue(self, namespace: str, name: str, *, node: str | None = None, pod: str | None = None) -> str:
        """A token for the ServiceAccount ``namespace/name``, bound to ``pod`` (in that namespace) or ``node``.

        The ServiceAccount must exist, and so must the object the token is bound to (the
        TokenRequest API refuses otherwise); a pod must run that ServiceAccount and be on a node.
        """
        sa_uid = self.service_accounts.get((namespace, name))
        if sa_uid is None:
            raise KeyError(f'serviceaccounts "{name}" not found in namespace {namespace!r}')
        if node is not None and pod is not None:
            raise ValueError("a token is bound to a node or to a pod, not both")
        bound: BoundObject | None = None
        if pod is not None:
            entry = self._store.get("pods", namespace, pod)
            if entry is None:
                raise KeyError(f'pods "{pod}" not found in namespace {namespace!r}')
            spec = entry.obj.get("spec") or {}
            if (spec.get("serviceAccountName") or "default") != name:
                raise ValueError(f"pod {namespace}/{pod} does not run as service account {name!r}")
            node_name = str(spec.get("nodeName") or "")
            node_entry = self._store.get("nodes", "", node_name) if node_name else None
            bound = BoundObject(
                "Pod", pod, entry.uid, namespace, node_name, node_entry.uid if node_entry is not None else ""
            )
        elif node is not None:
            node_entry = self._store.get("nodes", "", node)
            if node_entry is None:
                raise KeyError(f'nodes "{node}" not found')
            bound = BoundObject("Node", node, node_entry.uid, node_name=node, node_uid=node_entry.uid)
        extra: dict[str, tuple[str, ...]] = {CREDENTIAL_ID_KEY: (f"JTI={uuid.uuid4()}",)}
        if bound is not None:
            if bound.node_name:
                extra[NODE_NAME_KEY] = (bound.node_name,)
                if bound.node_uid:
                    extra[NODE_UID_KEY] = (bound.node_uid,)
            if bound.kind == "Pod":
                extra[POD_NAME_KEY] = (bound.name,)
                extra[POD_UID_KEY] = (bound.uid,)
        user = UserInfo(
            service_account_username(namespace, name),
            sa_uid,
            (ALL_SERVICE_ACCOUNTS_GROUP, f"{ALL_SERVICE_ACCOUNTS_GROUP}:{namespace}", AUTHENTICATED_GROUP),
            dict(sorted(extra.items())),
        )
        token = secrets.token_urlsafe(32)
        self._tokens[token] = _Credential(user, bound)
        return token

    def authenticate(self, authorization: str | None, path: str) -> UserInfo:
        """The user behind an ``Authorization`` header; raises ``Unauthenticated`` (401)."""
        if not authorization:
            if path in ANONYMOUS_PATHS:
                return ANONYMOUS
            raise Unauthenticated()
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated()
        credential = self._tokens.get(token.strip())
        if credential is None:
            raise Unauthenticated()
        if credential.bound is not None and not self._still_bound(credential.bound):
            raise Unauthenticated()
        return credential.user

    def _still_bound(self, bound: BoundObject) -> bool:
        """A bound token is valid while its object exists with the same uid (and a pod's node, too)."""
        if bound.kind == "Pod":
            entry = self._store.get("pods", bound.namespace, bound.name)
            if entry is None or entry.uid != bound.uid:
                return False
            deleted = entry.obj["metadata"].get("deletionTimestamp")
            # A terminating pod's token keeps working until a minute after its deletion time.
            if deleted and parse_rfc3339(str(deleted)) < utcnow() - _DELETED_GRACE:
                return False
        if bound.node_name and bound.node_uid:
            node = self._store.get("nodes", "", bound.node_name)
            return node is not None and node.uid == bound.node_uid
        return True
