"""Error answers aiohttp gives itself (no route, a method the route lacks, a body over the limit)
made JSON, as every other answer of the injector is: `{"error": "<reason>"}`, with the same status;
and a handler that fails answered with a JSON 500 (its traceback goes to the log, not to the caller)."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from gpuheal.tools.injector.bodies import refusal

log = logging.getLogger(__name__)

# Headers of aiohttp's error answers that still mean something on the JSON one.
_KEPT_HEADERS = ("Allow",)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer an HTTP error raised below with a JSON object naming it; other answers pass as they are."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        # aiohttp's own text is "<status>: <reason>" unless it says more (the body size limit does).
        said = error.text or ""
        reason = (
            f"{error.reason}: {request.method} {request.path}" if said == f"{error.status}: {error.reason}" else said
        )
        answer = refusal(error.status, reason)
        answer.headers.update({name: error.headers[name] for name in _KEPT_HEADERS if name in error.headers})
        return answer
    except Exception as error:
        log.exception("%s %s failed", request.method, request.path)
        return refusal(500, f"internal error ({type(error).__name__}); the server's log has more")
