"""JSON request bodies checked against a pydantic model, and the error answers the injector gives.

Every refusal is a JSON object `{"error": "<reason>"}`; a body that is not JSON, not an object, or
does not fit the model is answered 422 with a reason naming each field at fault. So is JSON that
Python's reader cannot take safely (an integer of more digits than it converts, arrays or objects
nested deeper than its recursion allows) and an object naming a key twice, which JSON leaves
undefined and Python would settle silently by keeping the last.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TypeVar

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


class _DuplicateKey(ValueError):
    """An object in the body names `key` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The JSON reader's object hook: the object as a dict, or `_DuplicateKey` for a key given twice."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as `model`; `Refused` (422) naming what is wrong otherwise."""
    raw = await request.read()
    try:
        data = json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKey as duplicate:
        raise Refused(422, f"the body names {duplicate.key!r} twice") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Refused(422, "the body is not JSON") from None
    except ValueError:
        # The one other ValueError the reader raises: int() refusing a number of too many digits.
        raise Refused(422, f"the body has a number of more than {sys.get_int_max_str_digits()} digits") from None
    except RecursionError:
        raise Refused(422, "the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise Refused(422, "the body is not a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise Refused(422, "; ".join(_problem(problem) for problem in error.errors())) from None


def _problem(problem: ErrorDetails) -> str:
    where = ".".join(str(part) for part in problem["loc"]) or "body"
    return f"{where}: {problem['msg']}"
