"""API errors with the exact ``Status`` bodies the Kubernetes API server returns.

Every failure the simulated API server reports is an ``ApiError``; the HTTP layer turns it into a
``Status`` object (``kind: Status``, ``status: Failure``, ``message``, ``reason``, ``details``,
``code``) with the matching HTTP status, so that ``kubernetes.client.ApiException`` carries the same
``status``, ``reason`` and ``body`` as against a real cluster.
"""

from __future__ import annotations

from .jsonvalues import JsonDict


class ApiError(Exception):
    """A failed API request: HTTP ``code``, Status ``reason``, ``message`` and optional ``details``."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: JsonDict | None = None,
        *,
        retry_after: int | None = None,
        keep_empty_details: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.retry_after = retry_after
        # Some errors carry ``details: {}`` (a non-nil, empty StatusDetails), e.g. a 403 on a path.
        self.keep_empty_details = keep_empty_details

    def status(self) -> JsonDict:
        """The ``Status`` object for the response body."""
        body: JsonDict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:  # a failure Status a handler returns may have none
            body["reason"] = self.reason
        if self.details or (self.details is not None and self.keep_empty_details):
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(qualified: str, name: str) -> JsonDict:
    """``details`` naming the object: ``kind`` holds the resource (plural), as the server does."""
    plural, _, group = qualified.partition(".")
    details: JsonDict = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = plural
    return details


def not_found(qualified: str, name: str) -> ApiError:
    """404 ``pods "x" not found`` (``qualified`` is ``pods`` or ``deployments.apps``)."""
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found', _details(qualified, name))


def already_exists(qualified: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{qualified} "{name}" already exists', _details(qualified, name))


def conflict(qualified: str, name: str, why: str | None = None) -> ApiError:
    """409 Conflict; by default the optimistic-concurrency message of a stale resourceVersion."""
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409, "Conflict", f'Operation cannot be fulfilled on {qualified} "{name}": {why}', _details(qualified, name)
    )


def invalid(kind: str, name: str, causes: list[tuple[str, str, str]], group: str = "") -> ApiError:
    """422 Invalid (``NewInvalid``); ``causes`` are ``(reason, field, message)`` like ``FieldValueRequired``.

    The message names the kind qualified by its group (``Deployment.apps "x" is invalid``) and lists
    each distinct ``field: message`` once (``ErrorList.ToAggregate``); ``causes`` keeps them all.
    An empty ``kind`` and ``name`` give the bare ``"" is invalid`` of errors about a patch.
    """
    summaries: list[str] = []
    for _, field, msg in causes:
        text = f"{field}: {msg}"
        if text not in summaries:
            summaries.append(text)
    summary = ", ".join(summaries)
    if len(summaries) > 1:
        summary = "[" + summary + "]"
    details: JsonDict = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if kind:
        details["kind"] = kind
    # StatusCause fields are omitempty.
    details["causes"] = [{k: v for k, v in (("reason", r), ("message", m), ("field", f)) if v} for r, f, m in causes]
    qualified = f"{kind}.{group}" if group else kind
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {summary}', details)


def causes_of(err: ApiError) -> list[tuple[str, str, str]]:
    """The ``(reason, field, message)`` causes of an Invalid error, to merge them into another."""
    causes = (err.details or {}).get("causes") or []
    return [(str(c.get("reason", "")), str(c.get("field", "")), str(c.get("message", ""))) for c in causes]


def patch_rejected(cause: str) -> ApiError:
    """422 for a JSON patch that cannot be applied (a failed ``test``, a missing path)."""
    return ApiError(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
        {"causes": [{"message": cause}]},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    """410 Expired, e.g. ``too old resource version: 5 (120)``."""
    return ApiError(410, "Expired", message)


def too_many_requests(message: str, causes: list[JsonDict], retry_after: int) -> ApiError:
    details: JsonDict = {"causes": causes}
    if retry_after > 0:
        details["retryAfterSeconds"] = retry_after
    return ApiError(429, "TooManyRequests", message, details, retry_after=retry_after or None)


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def resource_not_found() -> ApiError:
    """404 for a path the server does not serve at all."""
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format ({content_type}) - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json",
    )


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}", {"causes": [{"message": message}]})
