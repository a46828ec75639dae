"""The two measurement lines (netlab.jsonl): written and read by the same module, the same bytes
whichever JSON encoder is installed, and never a regex over the project's own JSON."""

from __future__ import annotations

import json
from unittest import mock

import pytest

from netlab import jsonl

MEASUREMENT = {"input": "https://a.test/", "test_keys": {"body": "é" * 10, "n": [1, 2.5, None]}}


@pytest.mark.parametrize("orjson", [True, False])
def test_both_encoders_write_the_same_bytes(orjson):
    if orjson and jsonl._orjson is None:
        pytest.skip("orjson not installed")
    with mock.patch.object(jsonl, "_orjson", jsonl._orjson if orjson else None):
        line = jsonl.result_line(7, MEASUREMENT)
        assert line == b'{"id":7,"measurement":' + json.dumps(MEASUREMENT, ensure_ascii=False,
                                                              separators=(",", ":")).encode() + b"}"
        head, raw = jsonl.split_result(line + b"\n")
    assert head == {"id": 7} and json.loads(raw) == MEASUREMENT
    assert json.loads(line) == {"id": 7, "measurement": MEASUREMENT}


def test_split_result_parses_other_answers():
    assert jsonl.split_result(b'{"id": 3, "error": "x", "kind": "crash"}\n') == (
        {"id": 3, "error": "x", "kind": "crash"}, None)
    head, raw = jsonl.split_result(b'{"id": 4, "measurement": {"a": 1}}\n')  # another writer's spacing
    assert head == {"id": 4} and json.loads(raw) == {"a": 1}
    head, raw = jsonl.split_result(b'{"id":"x","measurement":{"a":1}}\n')  # not an int id: parsed
    assert head == {"id": "x"} and json.loads(raw) == {"a": 1}


def test_vantage_lines():
    raw = jsonl.dumps(MEASUREMENT)
    line = jsonl.vantage_line("isp-a", raw)
    assert json.loads(line) == {"x_vantage": "isp-a", **MEASUREMENT} and line.endswith(b"\n")
    assert not jsonl.other_vantage(line, "isp-a") and jsonl.other_vantage(line, "isp-b")
    # rewritten from its parsed form (scoring adds OONI keys): x_vantage stays first, same layout
    rewritten = jsonl.dumps(json.loads(line))
    assert not jsonl.other_vantage(rewritten, "isp-a") and jsonl.other_vantage(rewritten, "isp-b")
    # a line of another layout (older results, a foreign tool) is never skipped unread
    spaced = json.dumps({"x_vantage": "isp-b", **MEASUREMENT}).encode()
    assert not jsonl.other_vantage(spaced, "isp-a")
