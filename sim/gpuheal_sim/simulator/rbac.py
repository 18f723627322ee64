"""RBAC: which requests a user may make, from ClusterRoles, Roles and their bindings.

The evaluation is upstream's (``plugin/pkg/auth/authorizer/rbac/rbac.go``, the rule resolver in
``pkg/registry/rbac/validation/rule.go`` and the matchers in ``pkg/apis/rbac/v1/evaluation_helpers.go``):

* ClusterRoleBindings grant their role everywhere; RoleBindings only in their namespace, and a
  RoleBinding may refer to a ClusterRole (whose rules then apply in that namespace only);
* a subject is a User (by name), a Group (by membership) or a ServiceAccount (by
  ``system:serviceaccount:<ns>:<name>``; a RoleBinding's subject without a namespace means the
  binding's namespace);
* a rule allows a resource request when its verbs (``*`` for all), apiGroups (``*``), resources
  (``*``, ``<resource>``, ``<resource>/<subresource>`` or ``*/<subresource>``: a rule on ``nodes``
  does not reach ``nodes/status``) and resourceNames (empty: any name; otherwise the request must name
  one) all match; a non-resource request when a verb matches and a nonResourceURL is the path or a
  ``prefix*`` of it;
* nothing is ever denied explicitly: a request no rule allows is refused. A binding whose role does not
  exist adds the resolution error to the reason (``RBAC: clusterrole.rbac.authorization.k8s.io "x"
  not found``).

ClusterRoles with an ``aggregationRule`` get the rules of every ClusterRole whose labels match one of
its selectors, as the clusterrole-aggregation controller writes them. The bootstrap roles the API
server always has are here too (``plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go``):
``cluster-admin`` for ``system:masters``, ``system:discovery`` and ``system:basic-user`` for every
authenticated user, ``system:public-info-viewer`` for everyone. ``system:masters`` is also allowed
everything before RBAC is asked, as kube-apiserver's privileged-group authorizer does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .auth import MASTERS_GROUP, UserInfo, service_account_username
from .requestinfo import RequestInfo
from .selectors import selector_from_object

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_KINDS = frozenset({"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})


@dataclass(frozen=True)
class PolicyRule:
    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def parse(cls, rule: Any) -> PolicyRule:
        if not isinstance(rule, dict):
            raise ValueError(f"a policy rule must be an object, not {rule!r}")

        def strings(key: str) -> tuple[str, ...]:
            value = rule.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"rule field {key!r} must be a list of strings")
            return tuple(value)

        parsed = cls(
            strings("verbs"),
            strings("apiGroups"),
            strings("resources"),
            strings("resourceNames"),
            strings("nonResourceURLs"),
        )
        if not parsed.verbs:
            raise ValueError("a policy rule needs verbs")
        if parsed.resources and parsed.non_resource_urls:
            raise ValueError("a policy rule names resources or nonResourceURLs, not both")
        return parsed

    def allows(self, info: RequestInfo) -> bool:
        """``RuleAllows``."""
        if not _verb_matches(self, info.verb):
            return False
        if info.is_resource_request:
            return (
                _api_group_matches(self, info.api_group)
                and _resource_matches(self, info.combined_resource, info.subresource)
                and _resource_name_matches(self, info.name)
            )
        return _non_resource_url_matches(self, info.path)


def _verb_matches(rule: PolicyRule, verb: str) -> bool:
    return any(v in ("*", verb) for v in rule.verbs)


def _api_group_matches(rule: PolicyRule, group: str) -> bool:
    return any(g in ("*", group) for g in rule.api_groups)


def _resource_matches(rule: PolicyRule, combined: str, subresource: str) -> bool:
    for resource in rule.resources:
        if resource in ("*", combined):
            return True
        if subresource and resource == f"*/{subresource}":
            return True
    return False


def _resource_name_matches(rule: PolicyRule, name: str) -> bool:
    return not rule.resource_names or name in rule.resource_names


def _non_resource_url_matches(rule: PolicyRule, path: str) -> bool:
    for url in rule.non_resource_urls:
        if url in ("*", path):
            return True
        if url.endswith("*") and path.startswith(url.rstrip("*")):
            return True
    return False


@dataclass(frozen=True)
class Subject:
    kind: str
    name: str
    namespace: str = ""

    def applies_to(self, user: UserInfo, binding_namespace: str) -> bool:
        """``appliesToUser``."""
        if self.kind == "User":
            return user.name == self.name
        if self.kind == "Group":
            return self.name in user.groups
        if self.kind == "ServiceAccount":
            namespace = self.namespace or binding_namespace
            return bool(namespace) and user.name == service_account_username(namespace, self.name)
        return False


@dataclass
class Role:
    kind: str  # "ClusterRole" or "Role"
    name: str
    namespace: str
    rules: list[PolicyRule]
    labels: dict[str, str] = field(default_factory=dict)
    aggregation: list[Any] | None = None


@dataclass(frozen=True)
class Binding:
    kind: str  # "ClusterRoleBinding" or "RoleBinding"
    name: str
    namespace: str
    role_kind: str
    role_name: str
    subjects: tuple[Subject, ...]

    def describe(self, subject: Subject) -> str:
        """How upstream names the binding that allowed a request (``clusterRoleBindingDescriber``)."""
        if subject.kind == "ServiceAccount":
            who = f'{subject.kind} "{subject.name}/{subject.namespace or self.namespace}"'
        else:
            who = f'{subject.kind} "{subject.name}"'
        if self.kind == "ClusterRoleBinding":
            return f'ClusterRoleBinding "{self.name}" of {self.role_kind} "{self.role_name}" to {who}'
        return f'RoleBinding "{self.name}/{self.namespace}" of {self.role_kind} "{self.role_name}" to {who}'


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def _metadata(doc: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    meta = doc.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{doc.get('kind')} without metadata.name")
    return name, str(meta.get("namespace") or ""), dict(meta.get("labels") or {})


def _check_api_version(doc: dict[str, Any]) -> None:
    if doc.get("apiVersion") != f"{RBAC_GROUP}/v1":
        raise ValueError(f"{doc.get('kind')} must be {RBAC_GROUP}/v1, not {doc.get('apiVersion')!r}")


class Authorizer:
    """The RBAC authorizer over the loaded roles and bindings (plus the bootstrap policy)."""

    def __init__(self) -> None:
        self.cluster_roles: dict[str, Role] = {}
        self.roles: dict[tuple[str, str], Role] = {}
        self.cluster_role_bindings: list[Binding] = []
        self.role_bindings: dict[str, list[Binding]] = {}
        self.load(BOOTSTRAP_POLICY)

    # --- loading -----------------------------------------------------------------------------------

    def load(self, docs: Iterable[dict[str, Any]]) -> None:
        """Add ClusterRoles, Roles, ClusterRoleBindings and RoleBindings (a later one replaces its namesake)."""
        for doc in docs:
            kind = doc.get("kind")
            _check_api_version(doc)
            name, namespace, labels = _metadata(doc)
            if kind in ("ClusterRole", "Role"):
                if (kind == "Role") != bool(namespace):
                    raise ValueError(f"{kind} {name!r}: a Role is namespaced, a ClusterRole is not")
                rules = [PolicyRule.parse(r) for r in doc.get("rules") or []]
                aggregation = None
                if kind == "ClusterRole" and doc.get("aggregationRule") is not None:
                    aggregation = list((doc["aggregationRule"] or {}).get("clusterRoleSelectors") or [])
                role = Role(kind, name, namespace, rules, labels, aggregation)
                if kind == "ClusterRole":
                    self.cluster_roles[name] = role
                else:
                    self.roles[(namespace, name)] = role
            elif kind in ("ClusterRoleBinding", "RoleBinding"):
                if (kind == "RoleBinding") != bool(namespace):
                    raise ValueError(f"{kind} {name!r}: a RoleBinding is namespaced, a ClusterRoleBinding is not")
                ref = doc.get("roleRef") or {}
                if ref.get("apiGroup") != RBAC_GROUP or ref.get("kind") not in ("ClusterRole", "Role"):
                    raise ValueError(f"{kind} {name!r}: roleRef must name a {RBAC_GROUP} ClusterRole or Role")
                if kind == "ClusterRoleBinding" and ref["kind"] != "ClusterRole":
                    raise ValueError(f"ClusterRoleBinding {name!r} can only refer to a ClusterRole")
                subjects = tuple(
                    Subject(str(s.get("kind")), str(s.get("name")), str(s.get("namespace") or ""))
                    for s in doc.get("subjects") or []
                )
                binding = Binding(kind, name, namespace, str(ref["kind"]), str(ref.get("name")), subjects)
                if kind == "ClusterRoleBinding":
                    self.cluster_role_bindings = [b for b in self.cluster_role_bindings if b.name != name]
                    self.cluster_role_bindings.append(binding)
                else:
                    existing = [b for b in self.role_bindings.get(namespace, []) if b.name != name]
                    self.role_bindings[namespace] = [*existing, binding]
            else:
                raise ValueError(f"not an RBAC object: {kind!r}")
        self._aggregate()

    def _aggregate(self) -> None:
        """Fill aggregated ClusterRoles with the rules of the roles they select (the aggregation controller)."""
        for role in self.cluster_roles.values():
            if role.aggregation is None:
                continue
            selectors = [selector_from_object(s) for s in role.aggregation]
            rules: list[PolicyRule] = []
            for name in sorted(self.cluster_roles):
                other = self.cluster_roles[name]
                if other is role or not any(s.matches(other.labels) for s in selectors):
                    continue
                for rule in other.rules:
                    if rule not in rules:
                        rules.append(rule)
            role.rules = rules

    # --- evaluation --------------------------------------------------------------------------------

    def _role_rules(self, kind: str, name: str, namespace: str) -> list[PolicyRule]:
        if kind == "ClusterRole":
            role = self.cluster_roles.get(name)
            if role is None:
                raise LookupError(f'clusterrole.{RBAC_GROUP} "{name}" not found')
        else:
            role = self.roles.get((namespace, name))
            if role is None:
                raise LookupError(f'role.{RBAC_GROUP} "{name}" not found')
        return role.rules

    def _bindings_for(self, namespace: str) -> Iterator[Binding]:
        yield from self.cluster_role_bindings
        if namespace:
            yield from self.role_bindings.get(namespace, [])

    def authorize(self, user: UserInfo, info: RequestInfo) -> Decision:
        """Allow or refuse; ``reason`` as the authorizer chain reports it."""
        if MASTERS_GROUP in user.groups:
            return Decision(True, "")
        errors: list[str] = []
        for binding in self._bindings_for(info.namespace):
            scope = binding.namespace
            subject = next((s for s in binding.subjects if s.applies_to(user, scope)), None)
            if subject is None:
                continue
            try:
                rules = self._role_rules(binding.role_kind, binding.role_name, scope)
            except LookupError as error:
                errors.append(str(error))
                continue
            if any(rule.allows(info) for rule in rules):
                return Decision(True, f"RBAC: allowed by {binding.describe(subject)}")
        if not errors:
            return Decision(False, "")
        # utilerrors.NewAggregate: one error as itself, several as "[a, b]".
        joined = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
        return Decision(False, f"RBAC: {joined}")


def _cluster_role(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "rules": list(rules),
    }


def _group_binding(name: str, role: str, *groups: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": g} for g in groups],
    }


# The part of bootstrappolicy/policy.go that concerns the simulated server.
BOOTSTRAP_POLICY: tuple[dict[str, Any], ...] = (
    _cluster_role(
        "cluster-admin",
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
        {"nonResourceURLs": ["*"], "verbs": ["*"]},
    ),
    _cluster_role(
        "system:discovery",
        {
            "nonResourceURLs": [
                "/livez",
                "/readyz",
                "/healthz",
                "/version",
                "/version/",
                "/openapi",
                "/openapi/*",
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
            ],
            "verbs": ["get"],
        },
    ),
    _cluster_role(
        "system:basic-user",
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
            "verbs": ["create"],
        },
        {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
    ),
    _cluster_role(
        "system:public-info-viewer",
        {"nonResourceURLs": ["/livez", "/readyz", "/healthz", "/version", "/version/"], "verbs": ["get"]},
    ),
    _group_binding("cluster-admin", "cluster-admin", MASTERS_GROUP),
    _group_binding("system:discovery", "system:discovery", "system:authenticated"),
    _group_binding("system:basic-user", "system:basic-user", "system:authenticated"),
    _group_binding(
        "system:public-info-viewer", "system:public-info-viewer", "system:authenticated", "system:unauthenticated"
    ),
)
