"""Field validation with the API server's rules and messages: what turns a write into a 422.

Each check returns ``Cause`` tuples ``(reason, field, message)`` in the order upstream appends its
``field.Error``s; ``errors.invalid`` turns them into the ``Status`` body (``NewInvalid``). Messages
are ``field.Error.ErrorBody()`` (``Invalid value: "x": detail``), values rendered as Go does
(strings ``%q``, numbers and bools ``%v``, anything else ``json.Marshal``).

Upstream sources (kubernetes/kubernetes):

* ``staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go``: ``ValidateObjectMeta``,
  ``ValidateObjectMetaUpdate``, ``ValidateAnnotations`` (``TotalAnnotationSizeLimitB``),
  ``ValidateOwnerReferences``, ``ValidateFinalizers``;
* ``staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/validation/validation.go``:
  ``ValidateLabels``, ``ValidateLabelName``, ``ValidateFieldValidation``;
* ``staging/src/k8s.io/apimachinery/pkg/api/validate/content/`` (``IsLabelKey``, ``IsLabelValue``)
  and ``staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go`` (``IsDNS1123Subdomain``);
* ``staging/src/k8s.io/apiserver/pkg/registry/rest/create.go`` and ``update.go``: every create runs
  the kind's ``Validate`` and, when that passed, the generic ObjectMeta check with path-segment
  names; every update runs the generic ObjectMeta checks (create and update style) and then the
  kind's ``ValidateUpdate``, so one bad label is reported several times in ``causes`` (once in the
  message, which ``ToAggregate`` de-duplicates);
* ``pkg/apis/core/validation/validation.go``: ``validateNodeTaints`` (under ``metadata.taints``, the
  path upstream really writes), ``ValidateNode``, ``ValidateNodeUpdate``, ``validateKubeFinalizerName``;
* ``pkg/apis/core/validation/events.go``: ``ValidateEventCreate``, ``ValidateEventUpdate``,
  ``legacyValidateEvent``.

Left out: resource quantity checks (``ValidateNodeResources``), node-specific annotations (taints
and preferAvoidPods in annotations), ``spec.podCIDRs`` format and dual-stack rules (their
immutability is checked), ``managedFields``, and every check of pod, workload and PDB specs
beyond the few the registry already makes.
"""

from __future__ import annotations

import re
from typing import Any

from .golang import marshal, quote
from .jsonvalues import JsonDict, dig

Cause = tuple[str, str, str]

TOTAL_ANNOTATION_SIZE_LIMIT_B = 256 * (1 << 10)
FIELD_VALIDATION_VALUES = ("", "Ignore", "Strict", "Warn")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
STANDARD_FINALIZERS = ("kubernetes", "orphan", "foregroundDeletion")

# --- field.Error ------------------------------------------------------------------------------------


def render(value: Any) -> str:
    """How ``ErrorBody`` prints a bad value (``json.Marshal`` keeps a struct's field order)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    return marshal(value, sort_keys=False)


def required(field: str, detail: str = "") -> Cause:
    return ("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))


def invalid(field: str, value: Any, detail: str) -> Cause:
    return ("FieldValueInvalid", field, f"Invalid value: {render(value)}" + (f": {detail}" if detail else ""))


def not_supported(field: str, value: Any, valid: tuple[str, ...]) -> Cause:
    detail = "supported values: " + ", ".join(quote(v) for v in valid)
    return ("FieldValueNotSupported", field, f"Unsupported value: {render(value)}: {detail}")


def duplicate(field: str, value: Any, detail: str = "") -> Cause:
    return ("FieldValueDuplicate", field, f"Duplicate value: {render(value)}" + (f": {detail}" if detail else ""))


def forbidden(field: str, detail: str) -> Cause:
    return ("FieldValueForbidden", field, f"Forbidden: {detail}")


def too_long(field: str, limit: int) -> Cause:
    return ("FieldValueTooLong", field, f"Too long: may not be more than {limit} bytes")


# --- string formats ---------------------------------------------------------------------------------

_LABEL_KEY_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
)
_LABEL_KEY_RE = re.compile(f"(?:{_LABEL_KEY_FMT})\\Z")
_LABEL_VALUE_FMT = f"({_LABEL_KEY_FMT})?"
_LABEL_VALUE_RE = re.compile(f"(?:{_LABEL_VALUE_FMT})\\Z")
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_DNS_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_LABEL_RE = re.compile(f"(?:{_DNS_LABEL_FMT})\\Z")
_DNS_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS_SUBDOMAIN_FMT = _DNS_LABEL_FMT + "(\\." + _DNS_LABEL_FMT + ")*"
_DNS_SUBDOMAIN_RE = re.compile(f"(?:{_DNS_SUBDOMAIN_FMT})\\Z")
_DNS_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """``RegexError``: the message, examples and the regex (note Go's ``',  or '`` spacing)."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    return msg + " (e.g. " + " or ".join(f"'{e}', " for e in examples) + f"regex used for validation is '{fmt}')"


def _dns_subdomain(value: str, unit: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append(f"must be no more than 253 {unit}")
    if not _DNS_SUBDOMAIN_RE.match(value):
        errs.append(regex_error(_DNS_SUBDOMAIN_MSG, _DNS_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    """``util/validation.IsDNS1123Subdomain`` (object names, event namespaces)."""
    return _dns_subdomain(value, "characters")


def is_dns1123_label(value: str) -> list[str]:
    """``util/validation.IsDNS1123Label`` (namespace names)."""
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS_LABEL_RE.match(value):
        if _DNS_SUBDOMAIN_RE.match(value):
            errs.append("must not contain dots")
        else:
            errs.append(regex_error(_DNS_LABEL_MSG, _DNS_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_path_segment_name(value: str, prefix: bool = False) -> list[str]:
    """``content.IsPathSegmentName`` / ``IsPathSegmentPrefix`` (the generic name check)."""
    if not prefix and value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


def is_qualified_name(value: str) -> list[str]:
    """``content.IsLabelKey`` (``IsQualifiedName``): an optional DNS-subdomain prefix and a name."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in _dns_subdomain(prefix, "bytes"))
    else:
        return [
            "a valid label key "
            + regex_error(_LABEL_KEY_MSG, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 bytes")
    if not _LABEL_KEY_RE.match(name):
        errs.append("name part " + regex_error(_LABEL_KEY_MSG, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc"))
    return errs


def is_label_value(value: str) -> list[str]:
    """``content.IsLabelValue``."""
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 bytes")
    if not _LABEL_VALUE_RE.match(value):
        errs.append(regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def _name_fn(kind: str) -> Any:
    """The kind's ``ValidateNameFunc``: namespaces are DNS labels, the rest DNS subdomains."""
    return is_dns1123_label if kind == "Namespace" else is_dns1123_subdomain


def validate_field_validation(value: str) -> list[Cause]:
    """``ValidateFieldValidation`` of the ``fieldValidation`` query parameter."""
    if value in FIELD_VALIDATION_VALUES:
        return []
    return [not_supported("fieldValidation", value, FIELD_VALIDATION_VALUES)]


# --- ObjectMeta -------------------------------------------------------------------------------------


def validate_labels(labels: Any, path: str = "metadata.labels") -> list[Cause]:
    out: list[Cause] = []
    for key, value in (labels or {}).items():
        out.extend(invalid(path, key, m) for m in is_qualified_name(key))
        out.extend(invalid(path, value, m) for m in is_label_value(str(value)))
    return out


def validate_annotations(annotations: Any, path: str = "metadata.annotations") -> list[Cause]:
    out: list[Cause] = []
    annotations = annotations or {}
    for key in annotations:
        out.extend(invalid(path, key, m) for m in is_qualified_name(key.lower()))
    size = sum(len(k.encode()) + len(str(v).encode()) for k, v in annotations.items())
    if size > TOTAL_ANNOTATION_SIZE_LIMIT_B:
        out.append(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT_B))
    return out


def _owner_references(refs: Any) -> list[Cause]:
    out: list[Cause] = []
    controller = ""
    path = "metadata.ownerReferences"
    for i, ref in enumerate(refs or []):
        at = f"{path}[{i}]"
        api_version = str(ref.get("apiVersion") or "")
        if not api_version:
            out.append(required(f"{at}.apiVersion", "must not be empty"))
        elif api_version.count("/") > 1 or not api_version.rpartition("/")[2]:
            out.append(invalid(f"{at}.apiVersion", api_version, "must be <group>/<version> or <version>"))
        for key in ("kind", "name", "uid"):
            if not ref.get(key):
                out.append(required(f"{at}.{key}", "must not be empty"))
        if api_version == "v1" and ref.get("kind") == "Event":
            out.append(invalid(at, _owner_struct(ref), "/v1, Kind=Event is disallowed from being an owner"))
        if ref.get("controller") is True:
            name = f"{ref.get('kind')}/{ref.get('name')}"
            if controller:
                out.append(
                    invalid(
                        path,
                        [_owner_struct(r) for r in refs],
                        'Only one reference can have Controller set to true. Found "true" in references for '
                        f"{controller} and {name}",
                    )
                )
            else:
                controller = name
    return out


def _owner_struct(ref: JsonDict) -> JsonDict:
    """``metav1.OwnerReference`` as ``json.Marshal`` writes it (omitempty pointers dropped)."""
    out: JsonDict = {
        "apiVersion": ref.get("apiVersion", ""),
        "kind": ref.get("kind", ""),
        "name": ref.get("name", ""),
        "uid": ref.get("uid", ""),
    }
    for key in ("controller", "blockOwnerDeletion"):
        if ref.get(key) is not None:
            out[key] = ref[key]
    return out


def _finalizers(finalizers: Any, path: str = "metadata.finalizers") -> list[Cause]:
    """``ValidateFinalizers`` (apimachinery): qualified names, not both orphan and foreground."""
    out: list[Cause] = []
    values = list(finalizers or [])
    for value in values:
        out.extend(invalid(path, value, m) for m in is_qualified_name(str(value)))
    if "orphan" in values and "foregroundDeletion" in values:
        out.append(invalid(path, values, "finalizer orphan and foregroundDeletion cannot be both set"))
    return out


def _kube_finalizers(finalizers: Any) -> list[Cause]:
    """The core group's extra finalizer check (``validateKubeFinalizerName``), index by index."""
    out: list[Cause] = []
    for i, value in enumerate(finalizers or []):
        at = f"metadata.finalizers[{i}]"
        errs = [invalid(at, value, m) for m in is_qualified_name(str(value))]
        if not errs and "/" not in str(value) and value not in STANDARD_FINALIZERS:
            errs.append(invalid(at, value, "name is neither a standard finalizer name nor is it fully qualified"))
        out.extend(errs)
    return out


def object_meta(
    meta: JsonDict, namespaced: bool, name_fn: Any, *, kube: bool = True, prefix_fn: Any = None
) -> list[Cause]:
    """``ValidateObjectMeta`` (with the core group's finalizer check when ``kube``).

    ``name_fn`` checks a name; ``prefix_fn`` a ``generateName`` (by default ``name_fn`` on the prefix
    with its trailing dash masked, as ``maskTrailingDash`` does).
    """
    out: list[Cause] = []
    generate = meta.get("generateName")
    if generate:
        check = prefix_fn or (lambda prefix: name_fn(_mask_dash(prefix)))
        out.extend(invalid("metadata.generateName", generate, m) for m in check(str(generate)))
    name = meta.get("name")
    if not name:
        out.append(required("metadata.name", "name or generateName is required"))
    else:
        out.extend(invalid("metadata.name", name, m) for m in name_fn(str(name)))
    namespace = meta.get("namespace")
    if namespaced:
        if not namespace:
            out.append(required("metadata.namespace"))
        else:
            out.extend(invalid("metadata.namespace", namespace, m) for m in is_dns1123_label(str(namespace)))
    elif namespace:
        out.append(forbidden("metadata.namespace", "not allowed on this type"))
    out.extend(validate_labels(meta.get("labels")))
    out.extend(validate_annotations(meta.get("annotations")))
    out.extend(_owner_references(meta.get("ownerReferences")))
    out.extend(_finalizers(meta.get("finalizers")))
    if kube:
        out.extend(_kube_finalizers(meta.get("finalizers")))
    return out


def _mask_dash(name: str) -> str:
    """``maskTrailingDash``: a generateName may end in '-'."""
    if len(name) > 1 and name.endswith("-"):
        return name[:-2] + "a"
    return name


def _generic_object_meta(meta: JsonDict, namespaced: bool) -> list[Cause]:
    """The registry's own ObjectMeta check, with path-segment names (``rest.validatePathSegment``)."""
    return object_meta(
        meta, namespaced, is_path_segment_name, kube=False, prefix_fn=lambda prefix: is_path_segment_name(prefix, True)
    )


def object_meta_update(new: JsonDict, old: JsonDict, *, kube: bool = True) -> list[Cause]:
    """``ValidateObjectMetaUpdate``: no new finalizers while deleting, immutable identity, then
    labels, annotations and owner references again (and the core finalizer check when ``kube``)."""
    out: list[Cause] = []
    if old.get("deletionTimestamp"):
        extra = sorted(set(new.get("finalizers") or []) - set(old.get("finalizers") or []))
        if extra:
            listed = ", ".join(quote(f) for f in extra)
            out.append(
                forbidden(
                    "metadata.finalizers",
                    f"no new finalizers can be added if the object is being deleted, found new finalizers []string{{{listed}}}",
                )
            )
    # name and namespace mismatches are 400s before validation; creationTimestamp is always reset.
    for key in ("uid", "deletionTimestamp", "deletionGracePeriodSeconds"):
        if new.get(key) != old.get(key):
            out.append(invalid(f"metadata.{key}", new.get(key), "field is immutable"))
    out.extend(validate_labels(new.get("labels")))
    out.extend(validate_annotations(new.get("annotations")))
    out.extend(_owner_references(new.get("ownerReferences")))
    if kube:
        out.extend(_kube_finalizers(new.get("finalizers")))
    return out


# --- nodes ------------------------------------------------------------------------------------------


def _taint_struct(taint: JsonDict) -> JsonDict:
    """``core.Taint`` (the internal type, no JSON tags) as ``json.Marshal`` writes it."""
    return {
        "Key": taint.get("key") or "",
        "Value": taint.get("value") or "",
        "Effect": taint.get("effect") or "",
        "TimeAdded": taint.get("timeAdded"),
    }


def node_taints(taints: Any) -> list[Cause]:
    """``validateNodeTaints`` (upstream reports them under ``metadata.taints``)."""
    out: list[Cause] = []
    seen: set[tuple[str, str]] = set()
    for i, taint in enumerate(taints or []):
        at = f"metadata.taints[{i}]"
        key = str(taint.get("key") or "")
        value = str(taint.get("value") or "")
        effect = str(taint.get("effect") or "")
        out.extend(invalid(f"{at}.key", key, m) for m in is_qualified_name(key))
        errs = is_label_value(value)
        if errs:
            out.append(invalid(f"{at}.value", value, ";".join(errs)))
        if not effect:
            out.append(required(f"{at}.effect"))
        elif effect not in TAINT_EFFECTS:
            out.append(not_supported(f"{at}.effect", effect, TAINT_EFFECTS))
        if (key, effect) in seen:
            out.append(duplicate(at, _taint_struct(taint), "taints must be unique by key and effect pair"))
            continue
        seen.add((key, effect))
    return out


def node_create(node: JsonDict) -> list[Cause]:
    """``ValidateNode`` (ObjectMeta and taints)."""
    out = object_meta(node.get("metadata") or {}, False, is_dns1123_subdomain)
    out.extend(node_taints(dig(node, "spec", "taints")))
    return out


def node_update(new: JsonDict, old: JsonDict) -> list[Cause]:
    """``ValidateNodeUpdate``: ObjectMeta, duplicate addresses, podCIDRs and providerID, taints."""
    out = object_meta_update(new.get("metadata") or {}, old.get("metadata") or {})
    seen: list[Any] = []
    for i, address in enumerate(dig(new, "status", "addresses") or []):
        ident = (address.get("type"), address.get("address"))
        if ident in seen:
            struct = {"Type": address.get("type") or "", "Address": address.get("address") or ""}
            out.append(duplicate(f"status.addresses[{i}]", struct))
        seen.append(ident)
    old_cidrs = dig(old, "spec", "podCIDRs") or []
    new_cidrs = dig(new, "spec", "podCIDRs") or []
    cidr_msg = 'node updates may not change podCIDR except from "" to valid'
    if old_cidrs:
        if len(old_cidrs) != len(new_cidrs):
            out.append(forbidden("spec.podCIDRs", cidr_msg))
        else:
            out.extend(
                forbidden("spec.podCIDRs", cidr_msg) for a, b in zip(old_cidrs, new_cidrs, strict=True) if a != b
            )
    old_pid = dig(old, "spec", "providerID")
    if old_pid and dig(new, "spec", "providerID") != old_pid:
        out.append(forbidden("spec.providerID", 'node updates may not change providerID except from "" to valid'))
    out.extend(node_taints(dig(new, "spec", "taints")))
    if dig(new, "spec", "externalID") != dig(old, "spec", "externalID"):
        out.append(forbidden("spec.externalID", "may not be updated"))
    return out


# --- events -----------------------------------------------------------------------------------------

REPORTING_INSTANCE_LIMIT = 128
ACTION_LIMIT = 128
REASON_LIMIT = 128
NOTE_LIMIT = 1024


def legacy_event(event: JsonDict) -> list[Cause]:
    """``legacyValidateEvent`` on the stored (core/v1) shape; paths are upstream's internal names."""
    out: list[Cause] = []
    namespace = str(dig(event, "metadata", "namespace") or "")
    involved_ns = str(dig(event, "involvedObject", "namespace") or "")
    mismatch = invalid("involvedObject.namespace", involved_ns, "does not match event.namespace")
    if not event.get("eventTime"):
        if not involved_ns:
            if namespace not in ("", "default"):
                out.append(mismatch)
        elif namespace != involved_ns:
            out.append(mismatch)
    else:
        if not involved_ns and namespace not in ("default", "kube-system"):
            out.append(mismatch)
        controller = str(event.get("reportingComponent") or "")
        if not controller:
            out.append(required("reportingController"))
        out.extend(invalid("reportingController", controller, m) for m in is_qualified_name(controller))
        instance = str(event.get("reportingInstance") or "")
        if not instance:
            out.append(required("reportingInstance"))
        if len(instance) > REPORTING_INSTANCE_LIMIT:
            out.append(invalid("reportingInstance", "", f"can have at most {REPORTING_INSTANCE_LIMIT} characters"))
        action = str(event.get("action") or "")
        if not action:
            out.append(required("action"))
        if len(action) > ACTION_LIMIT:
            out.append(invalid("action", "", f"can have at most {ACTION_LIMIT} characters"))
        reason = str(event.get("reason") or "")
        if not reason:
            out.append(required("reason"))
        if len(reason) > REASON_LIMIT:
            out.append(invalid("reason", "", f"can have at most {REASON_LIMIT} characters"))
        if len(str(event.get("message") or "")) > NOTE_LIMIT:
            out.append(invalid("message", "", f"can have at most {NOTE_LIMIT} characters"))
    out.extend(invalid("namespace", namespace, m) for m in is_dns1123_subdomain(namespace))
    return out


def _event_series(event: JsonDict) -> list[Cause]:
    out: list[Cause] = []
    series = event.get("series")
    if series is not None:
        if int(series.get("count") or 0) < 2:
            out.append(invalid("series.count", "", "should be at least 2"))
        if not series.get("lastObservedTime"):
            out.append(required("series.lastObservedTime"))
    return out


def event_create(event: JsonDict, v1_api: bool, source: Any = None) -> list[Cause]:
    """``ValidateEventCreate``: legacy rules; through events.k8s.io/v1 also ObjectMeta, series,
    a required ``eventTime``, type Normal or Warning and the deprecated fields unset. ``source``
    is the request's own ``deprecatedSource`` (the stored shape may carry a derived one)."""
    out = legacy_event(event)
    if not v1_api:
        return out
    out.extend(object_meta(event.get("metadata") or {}, True, is_dns1123_subdomain))
    out.extend(_event_series(event))
    if not event.get("eventTime"):
        out.append(required("eventTime"))
    event_type = str(event.get("type") or "")
    if event_type not in ("Normal", "Warning"):
        out.append(invalid("type", "", f"has invalid value: {event_type}"))
    if event.get("firstTimestamp"):
        out.append(invalid("firstTimestamp", "", "needs to be unset"))
    if event.get("lastTimestamp"):
        out.append(invalid("lastTimestamp", "", "needs to be unset"))
    if event.get("count"):
        out.append(invalid("count", "", "needs to be unset"))
    if source and (source.get("component") or source.get("host")):
        out.append(invalid("source", "", "needs to be unset"))
    return out


def _object_reference(ref: Any) -> JsonDict:
    """``core.ObjectReference`` (internal, no JSON tags) as ``json.Marshal`` writes it."""
    ref = ref or {}
    return {
        "Kind": ref.get("kind", ""),
        "Namespace": ref.get("namespace", ""),
        "Name": ref.get("name", ""),
        "UID": ref.get("uid", ""),
        "APIVersion": ref.get("apiVersion", ""),
        "ResourceVersion": ref.get("resourceVersion", ""),
        "FieldPath": ref.get("fieldPath", ""),
    }


def event_update(new: JsonDict, old: JsonDict, v1_api: bool) -> list[Cause]:
    """``ValidateEventUpdate``: legacy rules; through events.k8s.io/v1 also ObjectMeta and the
    immutable fields (``reason`` is checked twice upstream, so it is reported twice)."""
    out = legacy_event(new)
    if not v1_api:
        return out
    out.extend(object_meta_update(new.get("metadata") or {}, old.get("metadata") or {}))
    if new.get("series") != old.get("series"):
        out.extend(_event_series(new))

    def immutable(field: str, key: str, norm: Any = lambda v: v or "") -> None:
        value = norm(new.get(key))
        if value != norm(old.get(key)):
            out.append(invalid(field, value, "field is immutable"))

    def same(v: Any) -> Any:
        return v

    immutable("involvedObject", "involvedObject", _object_reference)
    immutable("reason", "reason")
    immutable("message", "message")
    immutable(
        "source", "source", lambda s: {"Component": (s or {}).get("component", ""), "Host": (s or {}).get("host", "")}
    )
    immutable("firstTimestamp", "firstTimestamp", same)
    immutable("lastTimestamp", "lastTimestamp", same)
    immutable("count", "count", lambda c: c or 0)
    immutable("reason", "reason")
    immutable("type", "type")
    immutable("eventTime", "eventTime", same)
    immutable("action", "action")
    immutable("related", "related", lambda r: None if r is None else _object_reference(r))
    immutable("reportingController", "reportingComponent")
    immutable("reportingInstance", "reportingInstance")
    return out


# --- PodDisruptionBudget ----------------------------------------------------------------------------

UNHEALTHY_POD_EVICTION_POLICIES = ("AlwaysAllow", "IfHealthyBudget")
_PERCENT_FMT = "[0-9]+%"
_PERCENT_RE = re.compile(f"(?:{_PERCENT_FMT})\\Z")


def _int_or_string(field: str, value: Any, detail: str) -> Cause:
    """``field.Invalid`` of an IntOrString: ``ErrorBody`` prints it with its ``String()`` (no quotes)."""
    return ("FieldValueInvalid", field, f"Invalid value: {value}: {detail}")


def positive_int_or_percent(value: Any, field: str) -> list[Cause]:
    """``ValidatePositiveIntOrPercent`` and ``IsNotMoreThan100Percent`` (pkg/apis/apps/validation)."""
    if isinstance(value, str):
        if not _PERCENT_RE.match(value):
            msg = regex_error(
                "a valid percent string must be a numeric string followed by an ending '%'", _PERCENT_FMT, "1%", "93%"
            )
            return [_int_or_string(field, value, msg)]
        if int(value[:-1]) > 100:
            return [_int_or_string(field, value, "must not be greater than 100%")]
        return []
    if isinstance(value, int) and value < 0:
        return [invalid(field, value, "must be greater than or equal to 0")]
    return []


def label_selector(selector: Any, path: str) -> list[Cause]:
    """``ValidateLabelSelector`` (apimachinery/pkg/apis/meta/v1/validation): matchLabels as labels,
    each matchExpressions requirement's operator, values and key."""
    if not isinstance(selector, dict):
        return []
    out = validate_labels(selector.get("matchLabels"), f"{path}.matchLabels")
    for i, req in enumerate(selector.get("matchExpressions") or []):
        at = f"{path}.matchExpressions[{i}]"
        op = req.get("operator") or ""
        values = req.get("values") or []
        if op in ("In", "NotIn"):
            if not values:
                out.append(required(f"{at}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                out.append(
                    forbidden(f"{at}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
                )
        else:
            out.append(invalid(f"{at}.operator", op, "not a valid selector operator"))
        key = str(req.get("key") or "")
        out.extend(invalid(f"{at}.key", key, m) for m in is_qualified_name(key))
        for j, value in enumerate(values):
            out.extend(invalid(f"{at}.values[{j}]", value, m) for m in is_label_value(str(value)))
    return out


def pdb_spec(spec: Any) -> list[Cause]:
    """``ValidatePodDisruptionBudgetSpec`` (pkg/apis/policy/validation/validation.go)."""
    spec = spec if isinstance(spec, dict) else {}
    out: list[Cause] = []
    min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
    if min_available is not None and max_unavailable is not None:
        out.append(
            (
                "FieldValueInvalid",
                "spec",
                "Invalid value: policy.PodDisruptionBudgetSpec: minAvailable and maxUnavailable cannot be both set",
            )
        )
    if min_available is not None:
        out.extend(positive_int_or_percent(min_available, "spec.minAvailable"))
    if max_unavailable is not None:
        out.extend(positive_int_or_percent(max_unavailable, "spec.maxUnavailable"))
    out.extend(label_selector(spec.get("selector"), "spec.selector"))
    policy = spec.get("unhealthyPodEvictionPolicy")
    if policy is not None and policy not in UNHEALTHY_POD_EVICTION_POLICIES:
        out.append(not_supported("spec.unhealthyPodEvictionPolicy", policy, UNHEALTHY_POD_EVICTION_POLICIES))
    return out


# --- every kind -------------------------------------------------------------------------------------


def validate_create(
    kind: str, obj: JsonDict, namespaced: bool, *, v1_event: bool = False, source: Any = None
) -> list[Cause]:
    """What ``rest.BeforeCreate`` finds wrong: the kind's ``Validate``, then (if that passed) the
    generic ObjectMeta check."""
    meta = obj.get("metadata") or {}
    if kind == "Node":
        out = node_create(obj)
    elif kind == "Event":
        out = event_create(obj, v1_event, source)
    elif kind == "PodDisruptionBudget":  # ValidatePodDisruptionBudget: the spec, then ObjectMeta
        out = pdb_spec(obj.get("spec")) + object_meta(meta, namespaced, _name_fn(kind))
    else:
        out = object_meta(meta, namespaced, _name_fn(kind))
    if not out:
        out = _generic_object_meta(meta, namespaced)
    return out


def validate_update(
    kind: str, new: JsonDict, old: JsonDict, namespaced: bool, *, v1_event: bool = False
) -> list[Cause]:
    """What ``rest.BeforeUpdate`` finds wrong: the generic ObjectMeta checks (create and update
    style), then the kind's ``ValidateUpdate`` (which checks ObjectMeta once more)."""
    new_meta = new.get("metadata") or {}
    old_meta = old.get("metadata") or {}
    out = _generic_object_meta(new_meta, namespaced)
    out.extend(object_meta_update(new_meta, old_meta, kube=False))
    if kind == "Node":
        out.extend(node_update(new, old))
    elif kind == "Event":
        out.extend(event_update(new, old, v1_event))
    elif kind == "PodDisruptionBudget":
        out.extend(pdb_spec(new.get("spec")))  # PDB updates run the create check
        out.extend(object_meta(new_meta, namespaced, _name_fn(kind)))
    else:
        out.extend(object_meta_update(new_meta, old_meta))
    return out
