"""Wire-level checks every request body passes before any handler, tokenizer or batch sees it.

Python's ``json`` module accepts inputs that later fail deep inside the server:
nesting deep enough to raise ``RecursionError``, integers of thousands of digits
(``ValueError`` past ``sys.get_int_max_str_digits()``, ``OverflowError`` in torch),
``NaN``/``Infinity``/``1e999`` floats, and ``\\ud800`` escapes that decode to lone
UTF-16 surrogates (which no tokenizer can encode). :func:`load_json` parses with those
cases turned into :class:`~serving.errors.InvalidRequestError` naming the field path
and the limit; :func:`check_text` applies the surrogate check to text that reached the
server another way (V2 binary tensors).
"""

from __future__ import annotations

import json
import math
from typing import Any

from serving.errors import InvalidRequestError

MAX_JSON_DEPTH = 32  # deepest array/object nesting accepted (OpenAI bodies need 4)
MAX_INT_DIGITS = 20  # digits of an integer literal; 2**64 has 20
INT_MIN = -(2**63)  # smallest integer accepted anywhere (int64)
INT_MAX = 2**64 - 1  # largest (uint64: torch.Generator.manual_seed's upper bound)
SEED_MIN, SEED_MAX = INT_MIN, INT_MAX  # the range torch.Generator.manual_seed accepts


class _BigInt:
    """Stand-in for an integer literal too long to convert (converted ints would cost O(n^2))."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


class _Constant:
    """Stand-in for ``NaN``, ``Infinity`` and ``-Infinity`` literals (not JSON, accepted by Python)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_int(text: str) -> int | _BigInt:
    digits = len(text.lstrip("-"))
    return _BigInt(digits) if digits > MAX_INT_DIGITS else int(text)


def _path(parts: list[str | int]) -> str:
    return ".".join(str(p) for p in parts) or "(body)"


def _bad(parts: list[str | int], message: str, code: str = "invalid_value") -> InvalidRequestError:
    where = _path(parts)
    return InvalidRequestError(f"{where}: {message}", param=where if parts else None, code=code)


def check_text(text: str, param: str) -> None:
    """Refuse a string holding lone UTF-16 surrogates (``\\ud800``...), which cannot be encoded.

    Raises:
        InvalidRequestError: naming ``param``.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{param}: holds a lone UTF-16 surrogate (U+{ord(text[exc.start]):04X} at character {exc.start}); "
            "send valid Unicode (encode surrogate pairs as one code point)",
            param=param,
            code="invalid_unicode",
        ) from None


def check_tree(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Walk a parsed body (iteratively) and refuse what the server cannot handle downstream.

    Raises:
        InvalidRequestError: the first offending value, with its field path (``messages.0.content``).
    """
    stack: list[tuple[Any, list[str | int], int]] = [(value, [], 0)]
    while stack:
        node, parts, depth = stack.pop()
        if isinstance(node, dict):
            if depth >= max_depth:
                raise _bad(parts, f"JSON nesting deeper than {max_depth} levels is not accepted", "too_deep")
            for key, child in node.items():
                check_text(key, _path(parts + [key]))
                stack.append((child, parts + [key], depth + 1))
        elif isinstance(node, list):
            if depth >= max_depth:
                raise _bad(parts, f"JSON nesting deeper than {max_depth} levels is not accepted", "too_deep")
            for i, child in enumerate(node):
                stack.append((child, parts + [i], depth + 1))
        elif isinstance(node, str):
            check_text(node, _path(parts))
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, _BigInt):
            raise _bad(
                parts,
                f"integer with {node.digits} digits is out of range; integers must lie within "
                f"[{INT_MIN}, {INT_MAX}]",
            )
        elif isinstance(node, int):
            if not INT_MIN <= node <= INT_MAX:
                raise _bad(parts, f"integer {node} is out of range; integers must lie within [{INT_MIN}, {INT_MAX}]")
        elif isinstance(node, _Constant):
            raise _bad(parts, f"{node.text} is not a JSON number; send a finite number")
        elif isinstance(node, float) and not math.isfinite(node):
            raise _bad(parts, "number is too large (overflows a 64-bit float); send a finite number")


def load_json(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a request body, refusing what would fail later (see the module docstring).

    Args:
        raw: the body bytes (UTF-8 JSON).
        max_depth: deepest nesting accepted.

    Returns:
        The parsed value.

    Raises:
        InvalidRequestError: empty body, invalid JSON, or a value :func:`check_tree` refuses.
    """
    if not raw.strip():
        raise InvalidRequestError("the request body is empty; send a JSON object", code="invalid_json")
    try:
        value = json.loads(raw, parse_int=_parse_int, parse_constant=_Constant)
    except RecursionError:
        raise InvalidRequestError(
            f"the request body nests JSON deeper than {max_depth} levels; flatten it", code="too_deep"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    check_tree(value, max_depth=max_depth)
    return value
