"""Argument types of the command line: a bad value is a usage error (exit 2) before any work.

Each function is an ``argparse`` ``type=``: it parses the text and raises ``ArgumentTypeError``
with what was expected, so ``--lr nan`` or ``--top-k 0`` never reaches a model or a trainer.
"""

from __future__ import annotations

import argparse
import math
import re
import types
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

TEXT_ENCODER = re.compile(r"^(minilm|none|hashing(:[1-9]\d*)?|clip:.+)$", re.IGNORECASE)
IMAGE_ENCODER = re.compile(r"^(none|clip:.+)$", re.IGNORECASE)
DEVICE_SPEC = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")  # what train.distributed.resolve_device understands


def _number(text: str, kind: Callable[[str], float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value:g}")
    return value


def unit_interval(text: str) -> float:
    """A share or weight in [0, 1]."""
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value:g}")
    return value


def dropout_rate(text: str) -> float:
    value = _number(text, float)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {value:g}")
    return value


def device(text: str) -> str:
    if not DEVICE_SPEC.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: use auto, cpu, mps, cuda or cuda:N")
    return text


def text_encoder(text: str) -> str:
    if not TEXT_ENCODER.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: use minilm, hashing[:DIM], clip:CHECKPOINT_DIR or none")
    return text


def image_encoder(text: str) -> str:
    if not IMAGE_ENCODER.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: use clip:CHECKPOINT_DIR or none")
    return text


def integer(text: str) -> int:
    """Any integer (the option's own check bounds it)."""
    return int(_number(text, int))


def number(text: str) -> float:
    """Any finite number (the option's own check bounds it)."""
    return _number(text, float)


_PLAIN_TYPES: dict[Any, Callable[[str], Any]] = {int: integer, float: number, str: str, Path: Path}


def add_field_flag(
    parser: argparse.ArgumentParser,
    name: str,
    hint: Any,
    *,
    dest: str,
    default: Any,
    help: str = "",
    parse: Callable[[str], Any] | None = None,
    required: bool = False,
    metavar: str | None = None,
) -> None:
    """One flag for a typed dataclass field: the type (or ``parse``) converts the text, a ``Literal``
    gives the choices, ``X | None`` is an ``X`` that may be left unset (its help says what unset
    means), and a boolean is the flag that switches it from its default (``--no-...`` for one that
    is on)."""
    if get_origin(hint) in (Union, types.UnionType):
        arms = [arm for arm in get_args(hint) if arm is not type(None)]
        if len(arms) != 1:
            raise TypeError(f"{name}: a flag has one type, got {hint}")
        hint = arms[0]
    if hint is bool:
        if name.startswith("--no-") != (default is True):
            raise TypeError(f"{name}: a boolean option on by default is shown as --no-..., one off as --...")
        action = "store_false" if default else "store_true"
        parser.add_argument(name, dest=dest, action=action, help=help or None)
        return
    choices = get_args(hint) if get_origin(hint) is Literal else None
    if metavar is None and choices is None:  # named after the flag, not after where it is stored
        metavar = name.lstrip("-").replace("-", "_").upper()
    if parse is None:
        parse = str if choices else _PLAIN_TYPES[hint]
    parser.add_argument(
        name,
        dest=dest,
        type=parse,
        choices=choices,
        default=default,
        required=required,
        metavar=metavar,
        help=f"{help} (default: {default})" if help and default is not None else help or None,
    )


def add_pq_options(parser: argparse.ArgumentParser) -> None:
    """The GSU quantizer's flags, shared by `evaluate` and `export`: one per field of
    :class:`~seminar.retrieval.gsu.PQGsuConfig`, under the name its metadata gives (``--pq-rerank``
    is also spelt ``--rerank-factor``)."""
    from seminar.retrieval.gsu_config import PQGsuConfig

    hints = get_type_hints(PQGsuConfig)
    for f in fields(PQGsuConfig):
        aliases = f.metadata.get("aliases", ())
        for alias in aliases:  # the same value under an older name (the default stays the field's)
            parser.add_argument(
                alias, dest=f"pq_{f.name}", type=integer, default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )
        also = f" (also {', '.join(aliases)})" if aliases else ""
        add_field_flag(
            parser,
            f.metadata["flag"],
            hints[f.name],
            dest=f"pq_{f.name}",
            default=f.default,
            help=f.metadata["help"] + also,
        )


def pq_config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~seminar.retrieval.gsu.PQGsuConfig` that :func:`add_pq_options`' flags describe; a
    value it refuses is a :class:`~seminar.errors.ConfigError` naming the flag (exit 2)."""
    from seminar.errors import ConfigError, InvalidValue
    from seminar.retrieval.gsu_config import PQGsuConfig

    flags = {f.name: f.metadata["flag"] for f in fields(PQGsuConfig)}
    try:
        return PQGsuConfig(**{name: getattr(args, f"pq_{name}") for name in flags})
    except InvalidValue as exc:
        raise ConfigError(f"{flags[exc.key]}: {exc.message}") from exc
