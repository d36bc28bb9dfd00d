"""Checks of raw request input that FastAPI does not make: the URL and the JSON body must be valid Unicode.

Starlette percent-decodes paths and queries with `errors="replace"`, so invalid UTF-8 (`%ff`) would reach
the endpoints as U+FFFD and different invalid ids would collide; Python's JSON parser accepts lone UTF-16
surrogate escapes (`"\\ud800"`), which no reply can encode; and FastAPI answers some malformed bodies
(invalid UTF-8, nesting deeper than the parser's recursion limit) with 400. Here each of these is a 422
that names the problem without echoing the input.
"""

from __future__ import annotations

import email.message
import json
import re
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
SURROGATE_MESSAGE = (
    "String should be valid Unicode: it holds a lone UTF-16 surrogate (an unpaired escape in the range D800-DFFF)"
)


def _invalid(loc: tuple[str | int, ...], kind: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body", *loc), "msg": message}])


def parse_json(body: bytes) -> Any:
    """The JSON value of a request body; RequestValidationError (422) when it is not UTF-8 JSON text with
    valid Unicode strings (RFC 8259 §8), or is nested too deeply for the parser."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid((exc.start,), "json_invalid", f"JSON text must be UTF-8; byte {exc.start} is not") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"JSON decode error: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise _invalid((exc.pos,), "json_invalid", message) from None
    except RecursionError:
        raise _invalid((), "json_invalid", "JSON decode error: the body is nested too deeply") from None
    if _SURROGATE_ESCAPE.search(body):  # lone surrogates can only come from escapes; most bodies have none
        where = lone_surrogate(value)
        if where is not None:
            raise _invalid(where, "string_unicode", SURROGATE_MESSAGE)
    return value


def lone_surrogate(value: Any) -> tuple[str | int, ...] | None:
    """The location of the first string (or object key) holding a lone surrogate, else None."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return loc
        elif isinstance(item, dict):
            for key, child in item.items():
                if not _encodable(key):
                    return loc
                stack.append(((*loc, key), child))
        elif isinstance(item, list):
            stack.extend(((*loc, i), child) for i, child in enumerate(item))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of this content type as JSON (application/json or application/*+json)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class ParsedJSONRequest(Request):
    """A request whose JSON body is parsed once, by `parse_json`."""

    async def json(self) -> Any:
        if not hasattr(self, "_checked_json"):
            self._checked_json = parse_json(await self.body())
        return self._checked_json


class StrictJSONRoute(APIRoute):
    """A route that parses a JSON body with `parse_json` before FastAPI validates it, so that every malformed
    body is a 422 through the app's validation-error handler (FastAPI turns errors raised while it parses
    into 400)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            request = ParsedJSONRequest(request.scope, request.receive)
            if self.body_field is not None and _is_json(request.headers.get("content-type")) and await request.body():
                await request.json()
            return await handler(request)

        return strict


def url_problem(scope: dict[str, Any]) -> str | None:
    """Why the request's path or query is not valid UTF-8 once percent-decoded, else None."""
    raw_path = scope.get("raw_path")
    if raw_path is not None and not _utf8(unquote_to_bytes(raw_path)):
        return "the URL path is not valid UTF-8 once percent-decoded; ids must be UTF-8 text."
    if not _utf8(unquote_to_bytes(scope.get("query_string", b"").replace(b"+", b" "))):
        return "the URL query is not valid UTF-8 once percent-decoded; parameters must be UTF-8 text."
    return None


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class ValidURL:
    """Refuse, with 422, requests whose path or query is not UTF-8 text (instead of serving U+FFFD ids)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        problem = url_problem(scope) if scope["type"] == "http" else None
        if problem is None:
            await self.app(scope, receive, send)
            return
        await JSONResponse({"detail": problem}, 422)(scope, receive, send)
