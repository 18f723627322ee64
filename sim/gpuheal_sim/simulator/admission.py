"""ValidatingAdmissionPolicies: CEL checks on writes, after authorization and validation, before storage.

This follows ``staging/src/k8s.io/apiserver/pkg/admission/plugin/policy/validating/`` (``dispatcher.go``,
``validator.go``) with the matching of ``.../policy/matching/matching.go`` and
``.../webhook/predicates/rules/rules.go``:

* a policy applies to a request when its ``matchConstraints`` match (``resourceRules`` by operation,
  API group, version, resource — ``nodes`` is the main resource only, ``nodes/status`` the status
  subresource, ``nodes/*`` both, ``*/*`` everything —, scope and resourceNames; ``excludeResourceRules``;
  ``namespaceSelector``, which cluster-scoped objects always pass; ``objectSelector`` on the new or the
  old object), and then for each of its bindings whose ``matchResources`` (if any) match too;
* ``matchConditions`` must all be true (an error counts as a failure of the policy unless one is false);
* ``variables`` are computed in order and seen as ``variables.<name>``; an error in one is an error only
  where an expression uses it;
* every ``validation`` is evaluated; one that is not ``true`` denies with its ``messageExpression``'s
  result (a single line, trimmed), else its ``message``, else ``failed expression: <expr>``, and its
  ``reason`` (default ``Invalid``, HTTP 422; ``Forbidden`` is 403); one that fails to evaluate denies
  (``Invalid``) under ``failurePolicy: Fail`` (the default) and is ignored under ``Ignore``;
* a binding's ``validationActions``: ``Deny`` refuses the request with the first denial, ``Warn``
  returns it as a ``Warning`` header, ``Audit`` only records it.

Expressions see ``object`` and ``oldObject`` (null on create and delete respectively), ``request``
(the AdmissionRequest: ``kind``, ``resource``, ``subResource``, ``name``, ``namespace``, ``operation``,
``userInfo`` with ``extra``, ``dryRun`` …; empty fields left out, as Go's ``omitempty`` leaves them),
``namespaceObject`` (null for cluster-scoped objects), ``variables`` and ``params`` (always null: a
policy with ``paramKind`` is refused when loaded, as are ``auditAnnotations`` and expressions that do
not compile).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import errors
from .auth import UserInfo
from .cel import CelError, Expression, cel_map, error_value, is_true, to_cel
from .jsonvalues import JsonDict
from .metadata import labels_of
from .selectors import LabelSelector, selector_from_object

ADMISSION_GROUP = "admissionregistration.k8s.io"
POLICY_KINDS = frozenset({"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"})
_OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT", "*"})
_REASON_CODES = {"Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413, "Invalid": 422}
_MAX_MESSAGE = 5 * 1024


@dataclass(frozen=True)
class AdmissionRequest:
    """``admission.Attributes`` for one write."""

    user: UserInfo
    operation: str
    group: str
    version: str
    resource: str
    subresource: str
    kind: str
    namespace: str
    name: str
    object: JsonDict | None
    old_object: JsonDict | None
    dry_run: bool = False
    kind_group: str | None = None
    kind_version: str | None = None
    options: JsonDict | None = None

    def view(self) -> JsonDict:
        """The AdmissionRequest as CEL's ``request`` sees it (Go field names, empty ones left out)."""
        kind = {
            "group": self.group if self.kind_group is None else self.kind_group,
            "version": self.version if self.kind_version is None else self.kind_version,
            "kind": self.kind,
        }
        resource = {"group": self.group, "version": self.version, "resource": self.resource}
        out: JsonDict = {"kind": kind, "resource": resource}
        if self.subresource:
            out["subResource"] = self.subresource
        out["requestKind"] = dict(kind)
        out["requestResource"] = dict(resource)
        if self.subresource:
            out["requestSubResource"] = self.subresource
        if self.name:
            out["name"] = self.name
        if self.namespace:
            out["namespace"] = self.namespace
        out["operation"] = self.operation
        out["userInfo"] = self.user.request_view()
        out["dryRun"] = self.dry_run
        if self.options is not None:
            out["options"] = self.options
        return out


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class ResourceRule:
    """A ``NamedRuleWithOperations``."""

    operations: tuple[str, ...]
    api_groups: tuple[str, ...]
    api_versions: tuple[str, ...]
    resources: tuple[str, ...]
    scope: str
    resource_names: tuple[str, ...]

    @classmethod
    def parse(cls, rule: Any) -> ResourceRule:
        if not isinstance(rule, dict):
            raise ValueError("a resource rule must be an object")
        parsed = cls(
            _strings(rule.get("operations"), "operations"),
            _strings(rule.get("apiGroups"), "apiGroups"),
            _strings(rule.get("apiVersions"), "apiVersions"),
            _strings(rule.get("resources"), "resources"),
            str(rule.get("scope") or "*"),
            _strings(rule.get("resourceNames"), "resourceNames"),
        )
        if not set(parsed.operations) <= _OPERATIONS:
            raise ValueError(f"unsupported operations {parsed.operations}")
        if parsed.scope not in ("*", "Cluster", "Namespaced"):
            raise ValueError(f"unsupported scope {parsed.scope!r}")
        return parsed

    def matches(self, operation: str, group: str, version: str, resource: str, sub: str, namespace: str) -> bool:
        """``rules.Matcher.Matches``, then resourceNames."""
        if self.scope == "Namespaced" and ((resource == "namespaces" and not group) or not namespace):
            return False
        if self.scope == "Cluster" and not (resource == "namespaces" and not group) and namespace:
            return False
        if not any(op in ("*", operation) for op in self.operations):
            return False
        if not any(g in ("*", group) for g in self.api_groups):
            return False
        if not any(v in ("*", version) for v in self.api_versions):
            return False
        for entry in self.resources:
            res, _, rule_sub = entry.partition("/")
            if res in ("*", resource) and rule_sub in ("*", sub):
                return True
        return False


@dataclass(frozen=True)
class MatchResources:
    namespace_selector: LabelSelector
    object_selector: LabelSelector
    rules: tuple[ResourceRule, ...]
    excluded: tuple[ResourceRule, ...]

    @classmethod
    def parse(cls, spec: Any) -> MatchResources:
        spec = spec or {}
        if spec.get("matchPolicy") not in (None, "Exact", "Equivalent"):
            raise ValueError(f"unsupported matchPolicy {spec.get('matchPolicy')!r}")
        return cls(
            selector_from_object(spec.get("namespaceSelector") or {}),
            selector_from_object(spec.get("objectSelector") or {}),
            tuple(ResourceRule.parse(r) for r in spec.get("resourceRules") or []),
            tuple(ResourceRule.parse(r) for r in spec.get("excludeResourceRules") or []),
        )

    def rules_match(
        self, operation: str, group: str, version: str, resource: str, sub: str, ns: str, name: str
    ) -> bool:
        def named(rule: ResourceRule) -> bool:
            return rule.matches(operation, group, version, resource, sub, ns) and (
                not rule.resource_names or name in rule.resource_names
            )

        if any(named(r) for r in self.excluded):
            return False
        return not self.rules or any(named(r) for r in self.rules)

    def matches(self, req: AdmissionRequest, namespace_labels: Callable[[str], dict[str, str] | None]) -> bool:
        if not self.rules_match(
            req.operation, req.group, req.version, req.resource, req.subresource, req.namespace, req.name
        ):
            return False
        if not self.namespace_selector.empty:
            if req.resource == "namespaces" and not req.group:
                labels = labels_of(req.object or req.old_object or {})
            elif req.namespace:
                labels = namespace_labels(req.namespace) or {}
            else:
                labels = None  # cluster-scoped: never excluded by a namespace selector
            if labels is not None and not self.namespace_selector.matches(labels):
                return False
        if not self.object_selector.empty:
            candidates = [o for o in (req.object, req.old_object) if o is not None]
            if not any(self.object_selector.matches(labels_of(o)) for o in candidates):
                return False
        return True


@dataclass(frozen=True)
class Validation:
    expression: Expression
    message: str
    message_expression: Expression | None
    reason: str


@dataclass
class Policy:
    name: str
    match: MatchResources
    conditions: list[tuple[str, Expression]]
    variables: list[tuple[str, Expression]]
    validations: list[Validation]
    failure_policy: str


@dataclass(frozen=True)
class PolicyBinding:
    name: str
    policy: str
    match: MatchResources | None
    actions: tuple[str, ...]


def _compile(source: Any, where: str) -> Expression:
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"{where}: an expression is required")
    try:
        return Expression(source)
    except CelError as error:
        raise ValueError(f"{where}: {error}") from None


def parse_policy(doc: JsonDict) -> Policy:
    name = str((doc.get("metadata") or {}).get("name") or "")
    if not name:
        raise ValueError("ValidatingAdmissionPolicy without metadata.name")
    spec = doc.get("spec") or {}
    for unsupported in ("paramKind", "auditAnnotations"):
        if spec.get(unsupported):
            raise ValueError(f"ValidatingAdmissionPolicy {name!r}: spec.{unsupported} is not supported here")
    match = MatchResources.parse(spec.get("matchConstraints"))
    if not match.rules:
        raise ValueError(f"ValidatingAdmissionPolicy {name!r}: spec.matchConstraints.resourceRules is required")
    failure = str(spec.get("failurePolicy") or "Fail")
    if failure not in ("Fail", "Ignore"):
        raise ValueError(f"ValidatingAdmissionPolicy {name!r}: failurePolicy must be Fail or Ignore")
    conditions = [
        (str(c.get("name")), _compile(c.get("expression"), f"{name}: matchConditions[{i}]"))
        for i, c in enumerate(spec.get("matchConditions") or [])
    ]
    variables = [
        (str(v.get("name")), _compile(v.get("expression"), f"{name}: variables[{i}]"))
        for i, v in enumerate(spec.get("variables") or [])
    ]
    validations: list[Validation] = []
    for i, v in enumerate(spec.get("validations") or []):
        reason = str(v.get("reason") or "Invalid")
        if reason not in _REASON_CODES:
            raise ValueError(f"{name}: validations[{i}].reason {reason!r} is not supported")
        message_expression = v.get("messageExpression")
        validations.append(
            Validation(
                _compile(v.get("expression"), f"{name}: validations[{i}]"),
                str(v.get("message") or ""),
                _compile(message_expression, f"{name}: validations[{i}].messageExpression")
                if message_expression
                else None,
                reason,
            )
        )
    if not validations:
        raise ValueError(f"ValidatingAdmissionPolicy {name!r}: spec.validations is required here")
    return Policy(name, match, conditions, variables, validations, failure)


def parse_binding(doc: JsonDict) -> PolicyBinding:
    name = str((doc.get("metadata") or {}).get("name") or "")
    spec = doc.get("spec") or {}
    if not name or not spec.get("policyName"):
        raise ValueError("ValidatingAdmissionPolicyBinding needs metadata.name and spec.policyName")
    if spec.get("paramRef"):
        raise ValueError(f"ValidatingAdmissionPolicyBinding {name!r}: spec.paramRef is not supported here")
    actions = _strings(spec.get("validationActions"), "validationActions")
    if not actions or not set(actions) <= {"Deny", "Warn", "Audit"} or {"Deny", "Warn"} <= set(actions):
        raise ValueError(
            f"ValidatingAdmissionPolicyBinding {name!r}: validationActions must be a non-empty set of "
            "Deny, Warn and Audit, without both Deny and Warn"
        )
    match = MatchResources.parse(spec["matchResources"]) if spec.get("matchResources") else None
    return PolicyBinding(name, str(spec["policyName"]), match, actions)


@dataclass(frozen=True)
class _Decision:
    message: str
    reason: str


class ValidatingAdmission:
    """The ValidatingAdmissionPolicy plugin over the loaded policies and bindings."""

    def __init__(
        self,
        namespace_labels: Callable[[str], dict[str, str] | None],
        namespace_object: Callable[[str], JsonDict | None],
    ) -> None:
        self._namespace_labels = namespace_labels
        self._namespace_object = namespace_object
        self.policies: dict[str, Policy] = {}
        self.bindings: dict[str, PolicyBinding] = {}

    def load(self, docs: Iterable[JsonDict]) -> None:
        for doc in docs:
            if doc.get("apiVersion") != f"{ADMISSION_GROUP}/v1":
                raise ValueError(f"{doc.get('kind')} must be {ADMISSION_GROUP}/v1, not {doc.get('apiVersion')!r}")
            if doc.get("kind") == "ValidatingAdmissionPolicy":
                policy = parse_policy(doc)
                self.policies[policy.name] = policy
            elif doc.get("kind") == "ValidatingAdmissionPolicyBinding":
                binding = parse_binding(doc)
                self.bindings[binding.name] = binding
            else:
                raise ValueError(f"not an admission policy object: {doc.get('kind')!r}")

    def _hooks(self) -> list[tuple[Policy, list[PolicyBinding]]]:
        hooks = []
        for name in sorted(self.policies):
            bindings = [b for _, b in sorted(self.bindings.items()) if b.policy == name]
            if bindings:
                hooks.append((self.policies[name], bindings))
        return hooks

    def may_apply(self, operation: str, group: str, version: str, resource: str, sub: str, ns: str, name: str) -> bool:
        """Whether any bound policy's resource rules cover the request (before its object is known)."""
        return any(
            policy.match.rules_match(operation, group, version, resource, sub, ns, name) for policy, _ in self._hooks()
        )

    def validate(self, req: AdmissionRequest) -> list[str]:
        """Admit (returning the warnings to send) or raise the ``ApiError`` of the first denial."""
        denied: list[tuple[Policy, PolicyBinding, _Decision]] = []
        warnings: list[str] = []
        for policy, bindings in self._hooks():
            if not policy.match.matches(req, self._namespace_labels):
                continue
            for binding in bindings:
                if binding.match is not None and not binding.match.matches(req, self._namespace_labels):
                    continue
                for decision in self._evaluate(policy, req):
                    if "Deny" in binding.actions:
                        denied.append((policy, binding, decision))
                    if "Warn" in binding.actions:
                        warnings.append(
                            f"Validation failed for ValidatingAdmissionPolicy '{policy.name}' with binding "
                            f"'{binding.name}': {decision.message}"
                        )
        if denied:
            policy, binding, decision = denied[0]
            raise _denial(req, policy, binding, decision)
        return warnings

    def _activation(self, req: AdmissionRequest) -> dict[str, Any]:
        namespace = self._namespace_object(req.namespace) if req.namespace and req.resource != "namespaces" else None
        return {
            "object": to_cel(req.object),
            "oldObject": to_cel(req.old_object),
            "request": to_cel(req.view()),
            "params": None,
            "namespaceObject": to_cel(namespace),
        }

    def _evaluate(self, policy: Policy, req: AdmissionRequest) -> list[_Decision]:
        """The denials one policy reaches for the request (``validator.Validate``)."""
        fail = policy.failure_policy == "Fail"
        activation = self._activation(req)
        # matchConditions: any false -> no match; else any error -> an error of the policy.
        condition_error: str | None = None
        for name, condition in policy.conditions:
            try:
                value = condition.evaluate(activation)
            except CelError as error:
                condition_error = condition_error or f"failed to evaluate matchCondition {name!r}: {error}"
                continue
            if not is_true(value):
                return []
        if condition_error is not None:
            return [_Decision(condition_error, "Invalid")] if fail else []
        values: dict[str, Any] = {}
        activation["variables"] = cel_map(values)
        for name, expression in policy.variables:
            try:
                values[name] = expression.evaluate(activation)
            except CelError as error:
                values[name] = error_value(
                    f"composited variable {name!r} fails to evaluate: expression '{expression.source}' "
                    f"resulted in error: {error}"
                )
            activation["variables"] = cel_map(values)
        decisions: list[_Decision] = []
        for validation in policy.validations:
            try:
                result = validation.expression.evaluate(activation)
            except CelError as error:
                if fail:
                    decisions.append(
                        _Decision(f"expression '{validation.expression.source}' resulted in error: {error}", "Invalid")
                    )
                continue
            if is_true(result):
                continue
            decisions.append(_Decision(_message(validation, activation), validation.reason))
        return decisions


def _message(validation: Validation, activation: dict[str, Any]) -> str:
    message = ""
    if validation.message_expression is not None:
        try:
            value = validation.message_expression.evaluate(activation)
        except CelError:
            value = None
        if isinstance(value, str):
            message = value.strip()
            if len(message) > _MAX_MESSAGE or "\n" in message:
                message = ""
    if not message and validation.message:
        message = validation.message.strip()
    if not message:
        message = f"failed expression: {validation.expression.source.strip()}"
    return message


def _denial(req: AdmissionRequest, policy: Policy, binding: PolicyBinding, decision: _Decision) -> errors.ApiError:
    """``admission.NewForbidden`` with the validation's reason and code, the message as the cause."""
    message = (
        f"ValidatingAdmissionPolicy '{policy.name}' with binding '{binding.name}' denied request: {decision.message}"
    )
    name = req.name
    if not name:
        meta = (req.object or {}).get("metadata") or {}
        name = str(meta.get("name") or meta.get("generateName") or "Unknown")
    qualified = f"{req.resource}.{req.group}" if req.group else req.resource
    details: JsonDict = {"name": name}
    if req.group:
        details["group"] = req.group
    details["kind"] = req.resource
    details["causes"] = [{"message": message}]
    return errors.ApiError(
        _REASON_CODES.get(decision.reason, 422),
        decision.reason,
        f'{qualified} "{name}" is forbidden: {message}',
        details,
    )
