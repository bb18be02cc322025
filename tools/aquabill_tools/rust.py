"""Python values as Rust source: literals for the notebook's typed `let` parameters."""

from __future__ import annotations

import math
import re
from pathlib import Path

# `let name: Type = value; // comment`, the form of every line of the parameters cell.
LET = re.compile(r'^let\s+(?P<name>\w+)\s*:\s*(?P<type>[^=]+?)\s*=\s*(?P<value>.*?);\s*'
                 r'(?://\s*(?P<comment>.*))?$')
STRING_TYPES = ('&str', "&'staticstr", 'String')
INT_TYPES = ('i64', 'i32', 'u32', 'u64', 'usize')


def string_literal(text: str) -> str:
    """A Rust string literal holding exactly `text` (any characters)."""
    return '"' + ''.join(_escape(ch) for ch in text) + '"'


def _escape(ch: str) -> str:
    if ch in '\\"':
        return '\\' + ch
    if ch == '\n':
        return '\\n'
    if ch == '\r':
        return '\\r'
    if ch == '\t':
        return '\\t'
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return f'\\u{{{ord(ch):x}}}'
    return ch


def cli_value(text: str) -> object:
    """A `-p name value` value as papermill's command line reads it (`True`/`False`, `None`,
    integers, floats, else text); `aquabill-papermill` and `nbexec` both use this syntax."""
    from papermill.cli import _resolve_type

    return _resolve_type(text)


def float_literal(value: float) -> str:
    """A Rust `f64` expression for `value`, NaN and infinities included."""
    if math.isnan(value):
        return 'f64::NAN'
    if math.isinf(value):
        return 'f64::INFINITY' if value > 0 else 'f64::NEG_INFINITY'
    text = repr(value)  # '0.1', '1e-05', '1e+16': valid Rust once it has a '.' or an exponent
    return text if ('.' in text or 'e' in text) else text + '.0'


def type_of(value: object) -> str:
    """The Rust type a parameter of this Python type gets when the notebook declares none."""
    if value is None:
        raise ValueError('null: Rust has no untyped null, give the parameter a value')
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, int):
        return 'i64'
    if isinstance(value, float):
        return 'f64'
    if isinstance(value, (str, Path)):
        return '&str'
    raise ValueError(f'{value!r}: only strings, integers, floats and booleans are parameters')


def literal(value: object, rust_type: str) -> str:
    """A Rust literal of `value` for a binding of type `rust_type`; ValueError if it is not one.

    Numbers are accepted for string parameters (papermill's `-p` reads `2026` as a number).
    """
    kind = rust_type.replace(' ', '')
    if kind == 'bool' and value in ('true', 'false', 'True', 'False'):
        return str(value).lower()
    if isinstance(value, bool):
        if kind == 'bool':
            return 'true' if value else 'false'
    elif isinstance(value, int):
        if kind in INT_TYPES:
            if kind.startswith('u') and value < 0:
                raise ValueError(f'{value!r} is not a {rust_type}')
            if not -(2**63) <= value < 2**64:
                raise ValueError(f'{value!r} does not fit a {rust_type}')
            return str(value)
        if kind == 'f64':
            return f'{value}.0'
    elif isinstance(value, float):
        if kind == 'f64':
            return float_literal(value)
    if kind in STRING_TYPES and isinstance(value, (str, Path, int, float)) \
            and not isinstance(value, bool):
        text = string_literal(str(value))
        return text if kind != 'String' else f'String::from({text})'
    if value is None:
        raise ValueError(f'null is not a {rust_type}: give the parameter a value')
    raise ValueError(f'{value!r} is not a {rust_type}')


def binding(name: str, value: object, rust_type: str | None = None) -> str:
    """`let name: Type = literal;` (the type from the value when none is declared)."""
    if not re.fullmatch(r'[A-Za-z_]\w*', name):
        raise ValueError(f'{name!r} is not a Rust identifier')
    rust_type = rust_type or type_of(value)
    return f'let {name}: {rust_type} = {literal(value, rust_type)};'


def declared_parameters(cell_source: str) -> dict[str, str]:
    """The `let` bindings of a parameters cell: name -> declared Rust type."""
    found: dict[str, str] = {}
    for line in cell_source.splitlines():
        m = LET.match(line.strip())
        if m:
            found[m['name']] = m['type'].strip()
    return found
