"""JSON text as the standard has it, read strictly: UTF-8, no NaN or Infinity, no number
too large to hold. Whatever is wrong raises :class:`ReportError`, with the path of the
offending value where there is one (``pulls[0].layers[2].totalBytes``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from collector.errors import ReportError

_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_INT_DIGITS = 4300  # what Python converts to an int; a longer number is no byte count


def load_json(text: str | bytes) -> Any:
    """The value of a JSON document; bytes must be UTF-8 (a byte order mark is allowed)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReportError("", f"the body is not UTF-8: byte 0x{exc.object[exc.start]:02x} "
                                  f"at offset {exc.start} ({exc.reason})") from exc
        text = text.removeprefix("\ufeff")
    if not text.strip(" \t\n\r"):
        raise ReportError("", "the body is empty; send a JSON report")
    try:
        return _loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError("", f"invalid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ReportError("", "invalid report: JSON nested too deeply") from exc


class _NotJson:
    """Stands in for a token Python's json reads but JSON does not allow (NaN, Infinity,
    1e999, a number of thousands of digits) until :func:`_where` finds its place."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _loads(text: str) -> Any:
    odd: list[_NotJson] = []

    def mark(problem: str) -> _NotJson:
        odd.append(_NotJson(problem))
        return odd[-1]

    def constant(token: str) -> _NotJson:
        return mark(f"{token} is not valid JSON; send a number, or leave the field out")

    def number(token: str) -> float | _NotJson:
        value = float(token)
        if math.isfinite(value):
            return value
        shown = token if len(token) <= 40 else token[:37] + "..."
        return mark(f"{shown} is too large for a number")

    def integer(token: str) -> int | _NotJson:
        digits = len(token.lstrip("-"))
        if digits > MAX_INT_DIGITS:
            return mark(f"an integer of {digits} digits is out of range")
        return int(token)

    try:
        obj = json.loads(text, parse_constant=constant, parse_float=number)
    except json.JSONDecodeError:
        raise
    except ValueError:
        # Python refuses to convert a number this long; only then is every integer
        # looked at (reading them through a function is slower).
        odd.clear()
        obj = json.loads(text, parse_constant=constant, parse_float=number, parse_int=integer)
    if odd:
        path, problem = _where(obj)
        raise ReportError(path, problem)
    return obj


def _where(obj: Any) -> tuple[str, str]:
    """The path and problem of the first :class:`_NotJson` in ``obj``, in document order."""
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, _NotJson):
            return path, value.problem
        if isinstance(value, dict):
            children = [(_key_path(path, key), item) for key, item in value.items()]
        elif isinstance(value, list):
            children = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
        else:
            continue
        stack.extend(reversed(children))
    raise AssertionError("a marked token was not found")  # pragma: no cover


def _key_path(path: str, key: str) -> str:
    if _SIMPLE_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"  # quoted, escaped: safe to print whatever it holds
