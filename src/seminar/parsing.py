"""Plain data (a loaded YAML file) into a config dataclass, validated by pydantic.

The config classes stay ordinary dataclasses with their own ``__post_init__`` checks; pydantic reads
their type hints and does the type checking. Validation runs in pydantic's strict JSON mode, the
closest match to what a YAML file can say: ``True`` is not an integer, ``"4"`` is not a number, a
list is accepted where a tuple is expected and a string where a path is; ``allow_inf_nan=False``
refuses ``.nan``/``.inf``. Each class carries :data:`YAML_FIELDS` as its ``__pydantic_config__``, so
an unknown key is an error rather than silently ignored.

Every error becomes a :class:`~seminar.errors.ConfigError` naming the key's path
(``datasets[0].build.negatives: expected an integer, got 'four'``); a rejected value from a
``__post_init__`` (:class:`~seminar.errors.InvalidValue`) gets the path of the object that raised it.
"""

from __future__ import annotations

import difflib
import functools
import json
import types
from collections.abc import Sequence
from dataclasses import MISSING, field, fields, is_dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

from pydantic import ConfigDict, TypeAdapter, ValidationError

from seminar.errors import ConfigError, InvalidValue

__all__ = ["YAML_FIELDS", "ParseError", "described", "parse_dataclass"]

YAML_FIELDS = ConfigDict(extra="forbid", allow_inf_nan=False, str_min_length=1)


def described(default: Any = MISSING, help: str = "", **cli: Any) -> Any:
    """A config field with the help text its command-line flag shows (a list default is copied per
    instance); ``cli`` holds how the flag is shown (``positional=True``, ``metavar=...``)."""
    metadata = {"help": help, **cli}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "string_too_short": "expected a non-empty string",
    "path_type": "expected a path",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping",
    "dataclass_type": "expected a mapping",
    "dataclass_args_type": "expected a mapping",
}


class ParseError(ConfigError):
    """A :class:`ConfigError` that keeps its problems as (key path, message) pairs, so a parse
    nested in another (a dataset's options) can be re-anchored at its place in the file."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        lines = [f"{path}: {text}" if path else text for path, text in problems]
        super().__init__(lines[0] if len(lines) == 1 else f"{len(lines)} problems:\n  " + "\n  ".join(lines))
        self.problems = problems


@functools.cache
def _adapter(cls: type) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


def parse_dataclass(cls: type, data: Any, where: str = "") -> Any:
    """Build ``cls`` from plain data: unknown or missing keys, wrong types and values its checks
    refuse are :class:`ConfigError`\\ s whose message starts with the key's path (``where`` first)."""
    try:
        text = json.dumps(data, default=str, allow_nan=True)
    except (TypeError, ValueError) as err:  # e.g. a mapping with keys of mixed types
        raise ParseError([(where or "config", f"not plain data ({err})")]) from None
    try:
        return _adapter(cls).validate_json(text, strict=True)
    except ValidationError as err:
        raise ParseError(_problems(cls, err, where)) from None


def _problems(cls: type, error: ValidationError, where: str) -> list[tuple[str, str]]:
    """One (path, message) per key. Each arm of a union reports a problem: an arm whose shape did not
    fit (a mapping given where a list was one choice) is left out when another arm got further;
    when none did, the choices are joined ("expected a list or a string")."""
    described = [d for item in error.errors() for d in _describe(cls, item, where)]
    deeper = {path for path, _, _, wrong_arm in described if not wrong_arm}
    found: dict[str, list[str]] = {}
    got: dict[str, str] = {}
    for path, text, value, wrong_arm in described:
        if wrong_arm and any(p == path or p.startswith((f"{path}.", f"{path}[")) for p in deeper):
            continue
        if text not in found.setdefault(path, []):
            found[path].append(text)
        if value is not None:
            got.setdefault(path, value)
    return [(path, _either(texts) + got.get(path, "")) for path, texts in found.items()]


def _either(texts: list[str]) -> str:
    """"expected a list or a string" from ["expected a list", "expected a string"]."""
    return " or ".join([texts[0], *(text.removeprefix("expected ") for text in texts[1:])])


def _describe(cls: type, item: Any, where: str) -> list[tuple[str, str, str | None, bool]]:
    """(path, message, ", got VALUE" or None, whether a union arm's shape did not fit) of one
    pydantic error (several for a nested parse)."""
    loc, _, at_arm = _walk(cls, item["loc"])
    kind = item["type"]
    got = f", got {item['input']!r}"
    if kind == "value_error":
        raised = item.get("ctx", {}).get("error")
        if isinstance(raised, InvalidValue):
            return [(_path(where, (*loc, raised.key)), raised.message, None, False)]
        if isinstance(raised, ParseError):  # a nested parse (a dataset's options) in __post_init__
            return [(_join(_path(where, loc), path), text, None, False) for path, text in raised.problems]
        return [(_path(where, loc), str(raised if raised is not None else item["msg"]), None, False)]
    if kind == "unexpected_keyword_argument":
        parent = _unwrap(_walk(cls, item["loc"][:-1])[1])
        known = [f.name for f in fields(parent) if f.init] if is_dataclass(parent) else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint_text = f" (did you mean {close[0]!r}?)" if close else ""
        return [(_path(where, loc), f"unknown key{hint_text}; known keys: {', '.join(known)}", None, False)]
    if kind in ("missing_argument", "missing"):
        return [(_path(where, loc), "missing required key", None, False)]
    if kind == "literal_error":
        return [(_path(where, loc), f"expected one of {item['ctx']['expected']}", got, False)]
    if kind in _EXPECTED:
        return [(_path(where, loc), _EXPECTED[kind], got, at_arm)]
    return [(_path(where, loc), str(item["msg"]), got, False)]


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where and key else where or key


def _path(where: str, loc: Sequence[int | str]) -> str:
    """``datasets[0].build`` from the location ("datasets", 0, "build"), after ``where``."""
    text = where
    for part in loc:
        text = f"{text}[{part}]" if isinstance(part, int) else _join(text, part)
    return text


def _unwrap(hint: Any) -> Any:
    """The type inside ``X | None`` (a union of several types stays as it is)."""
    if get_origin(hint) in (Union, types.UnionType):
        arms = [a for a in get_args(hint) if a is not type(None)]
        if len(arms) == 1:
            return arms[0]
    return hint


def _arm(union: Any, tag: str) -> Any:
    """The arm of a union that pydantic's location tag names: a dataclass by its name, a list by
    ``list[...]``, a scalar by its type's name (``int``, ``constrained-str``)."""
    for arm in (a for a in get_args(union) if a is not type(None)):
        origin = get_origin(arm)
        if is_dataclass(arm) and tag == arm.__name__:
            return arm
        if origin is not None and tag.startswith(f"{origin.__name__}["):
            return arm
        if origin is None and isinstance(arm, type) and tag.split("-")[-1] == arm.__name__:
            return arm
    return Any


def _walk(cls: type, raw: Sequence[int | str]) -> tuple[tuple[int | str, ...], Any, bool]:
    """A pydantic location as the key path a person reads: union arm tags taken out. Returns the
    path, the type found there, and whether the location ended at a union's arm."""
    hint: Any = cls
    path: list[int | str] = []
    at_arm = False
    for part in raw:
        hint, at_arm = _unwrap(hint), False
        if get_origin(hint) in (Union, types.UnionType) and isinstance(part, str):
            hint, at_arm = _arm(hint, part), True
        elif isinstance(part, int) and get_origin(hint) in (list, tuple):
            hint = get_args(hint)[0]
            path.append(part)
        elif isinstance(part, str) and is_dataclass(hint):
            hint = get_type_hints(hint, include_extras=True).get(part, Any)
            path.append(part)
        else:
            hint = Any
            path.append(part)
    return tuple(path), hint, at_arm
