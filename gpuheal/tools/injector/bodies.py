"""JSON request bodies checked against a pydantic model, and the error answers the injector gives.

Every refusal is a JSON object `{"error": "<reason>"}`; a body that is not JSON, not an object, or
does not fit the model is answered 422 with a reason naming each field at fault.
"""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

M = TypeVar("M", bound=BaseModel)


def refusal(status: int, reason: str) -> web.Response:
    """The answer to a request the injector will not carry out."""
    return web.json_response({"error": reason}, status=status)


class Refused(Exception):
    """A request refused with `status` and `reason`; handlers raise it, `answer` turns it into a response."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def answer(self) -> web.Response:
        return refusal(self.status, self.reason)


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as `model`; `Refused` (422) naming what is wrong otherwise."""
    try:
        data = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Refused(422, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise Refused(422, "the body is not a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise Refused(422, "; ".join(_problem(problem) for problem in error.errors())) from None


def _problem(problem: ErrorDetails) -> str:
    where = ".".join(str(part) for part in problem["loc"]) or "body"
    return f"{where}: {problem['msg']}"
