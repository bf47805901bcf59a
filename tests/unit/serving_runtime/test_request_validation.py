"""Wire-level checks without a server: the parser's refusals and the V2 binary-extension sizes."""

from __future__ import annotations

import json

import pytest

from serving.errors import InvalidRequestError
from serving.runtime.config import ConfigError
from serving.runtime.limits import RequestLimits, check_binary_extension
from serving.runtime.validation import check_text, load_json


@pytest.mark.parametrize(
    "raw,param,words",
    [
        ('{"a": ' + "[" * 40 + "]" * 40 + "}", "a" + ".0" * 31, "deeper than 32"),
        ("[" * 100_000 + "]" * 100_000, None, "deeper than 32"),  # past the C parser's recursion limit
        ('{"seed": ' + "1" * 21 + "}", "seed", "21 digits"),
        ('{"seed": 18446744073709551616}', "seed", "18446744073709551615"),
        ('{"x": [0, -9223372036854775809]}', "x.1", "-9223372036854775808"),
        ('{"t": NaN}', "t", "NaN is not a JSON number"),
        ('{"t": -Infinity}', "t", "-Infinity"),
        ('{"t": 1e400}', "t", "finite"),
        ('{"p": ["ok", "\\ud800"]}', "p.1", "U+D800"),
        ('{"\\udfff": 1}', None, "surrogate"),
        ("", None, "empty"),
        ("{", None, "not valid JSON"),
        (b"\xff\xfe", None, "not valid JSON"),
    ],
)
def test_load_json_refuses_naming_the_field(raw, param, words):
    with pytest.raises(InvalidRequestError) as info:
        load_json(raw if isinstance(raw, bytes) else raw.encode())
    assert words in info.value.message
    if param is not None:
        assert info.value.param == param


def test_load_json_keeps_valid_bodies():
    body = {"seed": 2**64 - 1, "low": -(2**63), "t": 0.5, "s": "caf\u00e9 \U0001f600", "n": None, "deep": [[[1]]]}
    assert load_json(json.dumps(body).encode()) == body


def test_check_text_names_the_position():
    check_text("fine \U0001f600", "prompt")
    with pytest.raises(InvalidRequestError, match=r"prompt: .*U\+DC00 at character 2"):
        check_text("ab\udc00", "prompt")


def _v2(sizes: list[int]) -> bytes:
    inputs = [{"name": f"i{i}", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": n}}
              for i, n in enumerate(sizes)]  # fmt: skip
    return json.dumps({"inputs": inputs}).encode()


@pytest.mark.parametrize(
    "sizes,payload,header,words",
    [
        ([10], b"123", None, "inputs.0.parameters.binary_data_size"),
        ([1, 5], b"123", None, "inputs.1.parameters.binary_data_size"),
        ([1], b"123", None, "must match"),
        (["3"], b"123", None, "non-negative integer"),
        ([3], b"123", "abc", "inference-header-content-length"),
        ([3], b"123", "99999", "inference-header-content-length"),
    ],
)
def test_binary_extension_sizes_must_match_the_bytes_sent(sizes, payload, header, words):
    head = _v2(sizes)
    with pytest.raises(InvalidRequestError, match=words):
        check_binary_extension(head + payload, header or str(len(head)))


def test_binary_extension_accepts_exact_sizes():
    head = _v2([2, 1])
    check_binary_extension(head + b"abc", str(len(head)))


def test_limits_validate_and_never_show_the_token():
    limits = RequestLimits(repository_token="s3cret-s3cret-s3cret").validate()
    assert "s3cret" not in repr(limits)
    assert limits.prompt_chars(100) == 6400 and RequestLimits(max_prompt_chars=5).prompt_chars(100) == 5
    with pytest.raises(ConfigError, match="at least 16 characters"):
        RequestLimits(repository_token="short").validate()
    with pytest.raises(ConfigError, match="--max_body_bytes"):
        RequestLimits(max_body_bytes=10).validate()
