"""Telling a request the provider refused from one it may have acted on.

The repair activity asks a provider again only after a refusal (see ProviderError.refused), so every
provider classifies its failures the same way: an error answer refuses, except from a gateway that
may have passed the request on (502, 504); a failure before anything was sent (no connection, a
certificate that failed verification in the handshake) refuses; a timeout or a connection lost after
sending does not.
"""

from __future__ import annotations

import ssl

import requests
import urllib3

GATEWAY_STATUSES = frozenset({502, 504})


def refusing_status(status: int) -> bool:
    """An error answer from the provider itself, not from a gateway in front of it."""
    return status >= 400 and status not in GATEWAY_STATUSES


def linked(error: BaseException) -> list[BaseException]:
    """The error and those it wraps: causes, arguments (requests, urllib3), azure-core's
    `inner_exception`, urllib3's `reason`, botocore's `kwargs["error"]`."""
    found: list[BaseException] = []
    todo: list[object] = [error]
    while todo:
        item = todo.pop()
        if isinstance(item, BaseException) and all(item is not known for known in found):
            found.append(item)
            kwargs = getattr(item, "kwargs", None)
            todo.extend(
                [
                    *item.args,
                    item.__cause__,
                    getattr(item, "inner_exception", None),
                    getattr(item, "reason", None),
                    kwargs.get("error") if isinstance(kwargs, dict) else None,
                ]
            )
    return found


def certificate_rejected(error: BaseException) -> bool:
    """TLS failed on the server's certificate: in the handshake, so before the request was sent."""
    return any(isinstance(item, ssl.SSLCertVerificationError) for item in linked(error))


def requests_never_sent(error: BaseException) -> bool:
    """Whether a `requests` failure happened before sending: no connection, or a rejected certificate."""
    if isinstance(error, requests.exceptions.ConnectTimeout | requests.exceptions.ProxyError):
        return True
    if isinstance(error, requests.exceptions.SSLError):
        return certificate_rejected(error)
    if isinstance(error, requests.exceptions.ConnectionError):
        return any(isinstance(item, urllib3.exceptions.NewConnectionError) for item in linked(error))
    return False
