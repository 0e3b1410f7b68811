"""Python values as C99 source text: exact float literals, byte arrays, safe strings and comments.

Every float32 weight is written with 9 significant digits, which a C compiler reads back to
the same float32 bit pattern, so the generated model is the bundle's model, not an
approximation of it.

>>> c_float(0.1), c_float(3.0), c_float(-0.0), c_double(96.0)
('0.100000001f', '3.0f', '-0.0f', '96.0')
>>> c_string('a"b??/c')
'"a\\\\"b\\\\?\\\\?/c"'
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def is_identifier(name: str) -> bool:
    """Whether ``name`` is a valid C identifier (ASCII letters, digits and underscores)."""
    return bool(_IDENTIFIER.match(name))


def c_float(value: float) -> str:
    """A float32 constant that round-trips exactly (``f`` suffix)."""
    text = f"{float(np.float32(value)):.9g}"
    if not any(c in text for c in ".en"):
        text += ".0"
    return text + "f"


def c_double(value: float) -> str:
    """A double constant that round-trips exactly."""
    text = repr(float(value))
    if not any(c in text for c in ".en"):
        text += ".0"
    return text


def c_string(text: str) -> str:
    """A C string literal: printable ASCII only, quotes, backslashes and ``?`` (trigraphs) escaped."""
    out = []
    for ch in text:
        if ch in '\\"?':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append("_")
    return '"' + "".join(out) + '"'


def comment_text(text: str) -> str:
    """Text that cannot end a ``/* */`` comment or break its line."""
    return "".join(ch if " " <= ch <= "~" else "_" for ch in text).replace("*/", "* /")


def wrap(items: Iterable[str], indent: str = "    ", width: int = 100) -> str:
    """Comma-separated items, wrapped to ``width`` columns."""
    lines: list[str] = []
    line = indent
    for item in items:
        piece = item + ","
        if len(line) + len(piece) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += piece + " "
    if line.strip():
        lines.append(line.rstrip())
    return "\n".join(lines)


def float_array(values: np.ndarray) -> str:
    return wrap(c_float(v) for v in np.asarray(values, dtype=np.float32).ravel().tolist())


def double_array(values: Iterable[float]) -> str:
    return wrap(c_double(v) for v in values)


def int8_array(values: np.ndarray) -> str:
    return wrap(str(int(v)) for v in np.asarray(values, dtype=np.int8).ravel().tolist())


def byte_array(data: bytes) -> str:
    return wrap((f"0x{b:02x}" for b in data), width=96)
