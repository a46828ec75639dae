"""JSON for measurement lines, shared by the probe worker and the harness.

orjson, where installed (the ``fast`` extra), encodes and parses a measurement with a 64 KiB
body many times faster than the standard library; at hundreds of measurements a second that is
a good part of the worker's time and most of scoring a large results folder. Without it the
standard library writes the same JSON, byte for byte in its layout: UTF-8, compact separators, no
NaN or Infinity.

The two lines the project passes measurements in are written and read here, and nowhere else: the
worker's answer to a measured job (``result_line`` / ``split_result``) and a line of
measurements.jsonl (``vantage_line`` / ``other_vantage``). Both keep the measurement's bytes as the
worker encoded them (no second encoding of 64 KiB bodies), which is why their first bytes have a
fixed layout, written by the functions that read them.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

_orjson: ModuleType | None  # orjson when installed (the fast extra); tests set it to None
try:
    import orjson

    _orjson = orjson
except ImportError:  # pragma: no cover - the lab image runs without it
    _orjson = None


def dumps(obj: Any) -> bytes:
    """One line's JSON (without the newline). Raises TypeError or ValueError for non-JSON values."""
    if _orjson is not None:
        line: bytes = _orjson.dumps(obj)
        return line
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    if _orjson is not None:
        return _orjson.loads(data)
    return json.loads(data)


_RESULT_HEAD = b'{"id":'
_MEASUREMENT_KEY = b',"measurement":'
_VANTAGE_KEY = b'{"x_vantage":'


def result_line(job_id: int, measurement: dict[str, Any]) -> bytes:
    """The worker's answer to a measured job, ``{"id": N, "measurement": {...}}`` (no newline)."""
    return _RESULT_HEAD + dumps(job_id) + _MEASUREMENT_KEY + dumps(measurement) + b"}"


def split_result(raw: bytes) -> tuple[dict[str, Any], bytes | None]:
    """(a worker's answer without its measurement, the measurement's JSON bytes or None). A line
    result_line wrote is sliced, its measurement unparsed; any other answer (an error) is parsed."""
    body = raw.rstrip()
    cut = body.find(_MEASUREMENT_KEY) if body.startswith(_RESULT_HEAD) and body.endswith(b"}}") else -1
    if cut > 0 and body[len(_RESULT_HEAD):cut].isdigit():
        return {"id": int(body[len(_RESULT_HEAD):cut])}, body[cut + len(_MEASUREMENT_KEY):-1]
    answer = json.loads(raw)
    if "measurement" in answer:
        return {"id": answer["id"]}, json.dumps(answer.pop("measurement"), ensure_ascii=False).encode()
    return answer, None


def vantage_line(vantage: str, measurement: bytes) -> bytes:
    """A line of measurements.jsonl: the measurement's JSON as the worker wrote it, tagged with the lab
    vantage it was measured from as its first key (also when its probe_* fields say something else)."""
    return _VANTAGE_KEY + dumps(vantage) + b"," + measurement[1:] + b"\n"


def other_vantage(line: bytes, vantage: str) -> bool:
    """True if ``line`` was written (vantage_line, or dumps of its parsed measurement: x_vantage stays
    first) for another vantage than ``vantage``; False when it cannot tell without parsing the line."""
    return line.startswith(_VANTAGE_KEY + b'"') and not line.startswith(_VANTAGE_KEY + dumps(vantage) + b",")
