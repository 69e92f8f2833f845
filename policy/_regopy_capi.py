"""Talking to rego-cpp through regopy's C API bindings: input documents in, decisions out.

**Input.** ``regopy.Input(doc)`` walks the document in Python and, for every string, allocates
a ctypes buffer in a wrapper that checks the value's type again. :func:`make_input` pushes the
same values through the same C functions (``regoInputString``, ``regoInputObject``, …) with one
type dispatch per value and UTF-8 bytes passed straight through, then hands the result to regopy
as an ordinary :class:`regopy.Input`, in about half the time. Integers wider than the C API's
``long`` are refused, where ctypes would silently wrap them.

**Output.** regopy reads a result by parsing the engine's JSON rendering of it, and rego-cpp
1.5 renders strings without escaping quotes or backslashes. A policy whose decision echoes an
input string (``sprintf("model %s …", [input.model])``) then yields, for a crafted model name,
text that parses as another document (one with ``"allow": true`` among duplicate keys, which
only the strict decision schema stopped) or does not parse at all (a denial turned into an
outage). :func:`query_entrypoint` reads the result from the engine's node tree instead, where
structure and types are exact, and refuses duplicate keys.

The bindings are regopy's own ``rego_shared`` module; when a regopy release lacks one of them,
both fall back to regopy's public API (tested to agree), the input after the same refusals.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable, Mapping
from typing import Any

import regopy

__all__ = ["ResultError", "make_input", "query_entrypoint"]

# The C API takes a C long; ctypes would silently wrap anything wider, so it is refused here.
_LONG_BITS = 8 * ctypes.sizeof(ctypes.c_long)
_LONG_MIN, _LONG_MAX = -(2 ** (_LONG_BITS - 1)), 2 ** (_LONG_BITS - 1) - 1


def _bindings() -> Any:
    try:
        from regopy import rego_shared

        lib = rego_shared.rego
        names = ("regoNewInput", "regoFreeInput", "regoInputString", "regoInputBoolean",
                 "regoInputInt", "regoInputFloat", "regoInputNull", "regoInputObjectItem",
                 "regoInputObject", "regoInputArray", "regoBundleQueryEntrypoint",
                 "regoOutputOk", "regoOutputNode", "regoFreeOutput", "regoNodeType",
                 "regoNodeSize", "regoNodeGet", "regoNodeValueSize", "regoNodeValue")
        probe = hasattr(regopy.Input("x"), "_impl") and hasattr(regopy.Interpreter(), "_impl")
        if all(hasattr(lib, n) for n in names) and probe:
            return lib
    except Exception:  # noqa: S110 - any surprise means: use regopy's public API
        pass
    return None


class _BuiltInput(regopy.Input):  # type: ignore[misc]
    """A :class:`regopy.Input` around a handle built here (regopy frees it)."""

    def __init__(self, handle: Any) -> None:
        self._impl = handle


def _c_string(value: str) -> bytes:
    """``value`` for the C API, which reads strings up to their first NUL: a string holding one
    would reach the policy cut short, so it is refused instead."""
    if "\x00" in value:
        raise ValueError("a string in the policy input contains a NUL character")
    return value.encode()


def _c_long(value: int) -> int:
    """``value`` for the C API, which takes a C long: ctypes would wrap a wider one."""
    if not _LONG_MIN <= value <= _LONG_MAX:
        raise OverflowError("an integer in the policy input is out of the engine's range")
    return value


def _refuse_lossy(value: Any) -> None:
    """Refuse what :func:`_builder` refuses and ``regopy.Input`` would pass on changed: a string
    cut at its NUL, an integer wrapped, a key that is not a string."""
    kind = type(value)
    if kind is str:
        _c_string(value)
    elif kind is int:
        _c_long(value)
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            if type(key) is not str:
                raise TypeError("object keys in the policy input must be strings")
            _c_string(key)
            _refuse_lossy(inner)
    elif kind is list or kind is tuple:
        for inner in value:
            _refuse_lossy(inner)


def _public_input(doc: Mapping[str, Any]) -> regopy.Input:
    """``regopy.Input(doc)``, the fallback, refusing what the C API path refuses: the policy
    must decide on the value the request carries, whichever path builds it."""
    _refuse_lossy(doc)
    return regopy.Input(doc)


def _builder(lib: Any) -> Callable[[Mapping[str, Any]], regopy.Input]:
    new, free = lib.regoNewInput, lib.regoFreeInput
    string, boolean, integer = lib.regoInputString, lib.regoInputBoolean, lib.regoInputInt
    real, null, item = lib.regoInputFloat, lib.regoInputNull, lib.regoInputObjectItem
    obj, array = lib.regoInputObject, lib.regoInputArray

    def push(handle: Any, value: Any) -> int:
        kind = type(value)
        if kind is str:
            return int(string(handle, _c_string(value)))
        if kind is bool:
            return int(boolean(handle, value))
        if kind is int:
            return int(integer(handle, _c_long(value)))
        if value is None:
            return int(null(handle))
        if kind is float:
            return int(real(handle, value))
        if isinstance(value, Mapping):
            for key, inner in value.items():
                if type(key) is not str:
                    raise TypeError("object keys in the policy input must be strings")
                if string(handle, _c_string(key)) or push(handle, inner) or item(handle):
                    return 1
            return int(obj(handle, len(value)))
        if kind is list or kind is tuple:
            for inner in value:
                if push(handle, inner):
                    return 1
            return int(array(handle, len(value)))
        raise TypeError(f"cannot put a {kind.__name__} into the policy input")

    def build(doc: Mapping[str, Any]) -> regopy.Input:
        handle = new()
        try:
            if push(handle, doc):
                raise regopy.RegoError("rego-cpp refused the policy input")
        except BaseException:
            free(handle)
            raise
        return _BuiltInput(handle)

    return build


# Node kinds of rego-cpp's C API (regopy.NodeKind).
_ARRAY, _SET, _OBJECT, _ITEM = 1004, 1005, 1006, 1007
_INT, _FLOAT, _STRING, _TRUE, _FALSE, _NULL = 1008, 1009, 1010, 1011, 1012, 1013
_TERM, _SCALAR, _UNDEFINED, _TERMS, _RESULTS, _RESULT = 1002, 1003, 1014, 1015, 1017, 1018


class ResultError(ValueError):
    """The engine's result is not one well-formed value."""


def _reader(lib: Any) -> Callable[[regopy.Interpreter, regopy.Bundle, str], Any]:
    query, ok, root, free = (lib.regoBundleQueryEntrypoint, lib.regoOutputOk, lib.regoOutputNode,
                             lib.regoFreeOutput)
    kind_of, size_of, child = lib.regoNodeType, lib.regoNodeSize, lib.regoNodeGet
    value_size, value_into = lib.regoNodeValueSize, lib.regoNodeValue

    def text(node: Any) -> str:
        size = value_size(node)
        buf = ctypes.create_string_buffer(size)
        if value_into(node, buf, size):
            raise ResultError("unreadable scalar")
        raw = buf.raw[: size - 1] if size else b""
        if b"\0" in raw:
            raise ResultError("a string holds a NUL byte")
        return raw.decode()

    def string(node: Any) -> str:
        # rego-cpp 1.5 keeps a string in one of three forms: builtin results quoted around
        # their raw text, input and sprintf results raw, policy literals in their escaped
        # source form. The forms overlap, so a string's text is recovered as well as they
        # allow; structure, keys' distinctness and types, which decide, are exact.
        value = text(node)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            return value[1:-1]
        if "\\" in value:
            try:
                return str(json.loads(f'"{value}"'))
            except ValueError:
                return value
        return value

    def convert(node: Any) -> Any:
        kind, size = kind_of(node), size_of(node)
        if kind in (_TERM, _SCALAR):
            if size != 1:
                raise ResultError("malformed term")
            return convert(child(node, 0))
        if kind == _STRING:
            return string(node)
        if kind == _TRUE:
            return True
        if kind == _FALSE:
            return False
        if kind == _NULL:
            return None
        if kind == _INT:
            return int(text(node))
        if kind == _FLOAT:
            return float(text(node))
        if kind in (_ARRAY, _SET):
            return [convert(child(node, i)) for i in range(size)]
        if kind == _OBJECT:
            out: dict[str, Any] = {}
            for i in range(size):
                item = child(node, i)
                if kind_of(item) != _ITEM or size_of(item) != 2:
                    raise ResultError("malformed object")
                key = convert(child(item, 0))
                if not isinstance(key, str) or key in out:
                    raise ResultError("object keys must be distinct strings")
                out[key] = convert(child(item, 1))
            return out
        raise ResultError(f"unexpected node kind {kind}")

    def run(interpreter: regopy.Interpreter, program: regopy.Bundle, entrypoint: str) -> Any:
        """The entrypoint's one value; ``ResultError`` when undefined, failed or malformed."""
        output = query(interpreter._impl, program._impl, entrypoint.encode())
        if not output:
            raise ResultError("the query failed")
        try:
            if not ok(output):
                raise ResultError("the query failed")
            results = root(output)
            if kind_of(results) == _UNDEFINED:
                raise ResultError("the entrypoint is undefined")
            if kind_of(results) != _RESULTS or size_of(results) != 1:
                raise ResultError("not exactly one result")
            result = child(results, 0)
            terms = child(result, 0) if kind_of(result) == _RESULT and size_of(result) else None
            if terms is None or kind_of(terms) != _TERMS or size_of(terms) != 1:
                raise ResultError("not exactly one value")
            return convert(child(terms, 0))
        finally:
            free(output)

    return run


def _public_query(interpreter: regopy.Interpreter, program: regopy.Bundle, entrypoint: str) -> Any:
    output = interpreter.query_bundle_entrypoint(program, entrypoint)
    if not output.ok() or len(output) != 1 or len(output[0].expressions) != 1:
        raise ResultError("the query failed or its value is undefined")
    return output[0].expressions[0]


_LIB = _bindings()
make_input: Callable[[Mapping[str, Any]], regopy.Input] = (
    _public_input if _LIB is None else _builder(_LIB)
)
query_entrypoint: Callable[[regopy.Interpreter, regopy.Bundle, str], Any] = (
    _public_query if _LIB is None else _reader(_LIB)
)
