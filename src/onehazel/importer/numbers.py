"""Numbers that keep their exact value from the file to the server.

A JSON number with a fraction or an exponent is sent as a JSON number when a binary float
holds its value exactly as written (``1.85``, ``10.50``, which then travels as ``10.5``: the
same value). A number with more significant digits than a float holds
(``12345678901234567890.12``) is never rounded: it becomes a ``Decimal``, which the client
sends as a string with exactly its digits, the form ``decimal`` fields (money) accept. Integers
are Python ``int``, exact at any length.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal, InvalidOperation
from typing import Any


def exact_number(literal: str) -> float | Decimal:
    """The value of a JSON number literal, as a float only when that loses nothing."""
    number = float(literal)
    if math.isfinite(number):
        shortest = repr(number)
        if shortest == literal:
            return number
        try:
            if Decimal(shortest) == Decimal(literal):
                return number
        except InvalidOperation:
            pass
    return Decimal(literal)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def loads(text: str) -> Any:
    """Parse JSON keeping every number's value exact; NaN and Infinity are refused."""
    return json.loads(text, parse_float=exact_number, parse_constant=_no_constants)
