"""The two value parsers every configuration source shares: booleans and durations.

One boolean vocabulary (``true/false``, ``1/0``, ``yes/no``, ``on/off``, any case) and one
duration syntax (a plain number in the caller's default unit, or a number with a unit:
``500ms``, ``30s``, ``5m``, ``1h``), so ``HEALTH_CHECK_INTERVAL=30s`` inherited from a shell
means what it says. Both raise ``ValueError`` with a sentence saying what is allowed.
"""

from __future__ import annotations

import math
import re
from typing import Literal

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
BOOL_ALLOWED = "true or false (also 1/0, yes/no, on/off)"
DURATION_ALLOWED = "a duration such as 500ms, 30s, 5m or 1h"

_UNIT_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)


def parse_bool(raw: str | bool) -> bool:
    """``True``/``False`` from the shared vocabulary; anything else is a ``ValueError``."""
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ValueError(f"is not a boolean: use {BOOL_ALLOWED}")


def parse_duration(raw: str | float, default_unit: Literal["ms", "s"]) -> float:
    """A duration in ``default_unit``: a plain number is taken in that unit, a suffixed one
    (``ms``, ``s``, ``m``, ``h``) is converted. Negative, NaN and infinite values are errors."""
    unit: str = default_unit
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    else:
        match = _DURATION.match(str(raw))
        if match is None:
            raise ValueError(f"is not a duration: use {DURATION_ALLOWED} (a plain number means {default_unit})")
        value, unit = float(match.group(1)), (match.group(2) or default_unit).lower()
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"is not a duration: use {DURATION_ALLOWED}")
    return value * _UNIT_MS[unit] / _UNIT_MS[default_unit]
