"""JSON for measurement lines, shared by the probe worker and the harness.

orjson, where installed (the ``fast`` extra), encodes and parses a measurement with a 64 KiB
body many times faster than the standard library; at hundreds of measurements a second that is
a good part of the worker's time and most of scoring a large results folder. Without it the
standard library writes the same JSON: UTF-8, no NaN or Infinity.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - the lab image runs without it
    _orjson = None


def dumps(obj: Any) -> bytes:
    """One line's JSON (without the newline). Raises TypeError or ValueError for non-JSON values."""
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(obj, ensure_ascii=False, allow_nan=False).encode()


def loads(data: bytes | str) -> Any:
    if _orjson is not None:
        return _orjson.loads(data)
    return json.loads(data)
