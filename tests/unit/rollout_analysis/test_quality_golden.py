"""Golden sets and answer normalisation of the quality probe (no network)."""

from __future__ import annotations

import json

import pytest

from components.bootstrap.dataset import default_golden_set
from serving.rollout.quality import (
    GoldenPrompt,
    GoldenSetError,
    QualityResult,
    load_golden_set,
    normalise,
    probe,
)


def test_default_golden_set_is_the_test_split_in_prompt_format():
    golden = default_golden_set(20)
    assert len(golden) == 20 and len({g.prompt for g in golden}) == 20
    assert all(g.prompt.startswith("Q: ") and g.prompt.endswith("\nA:") for g in golden)
    assert all(g.expected == g.expected.strip() and g.expected for g in golden)
    assert default_golden_set(5) == golden[:5]  # reproducible


def test_load_golden_set_reads_prompt_completion_jsonl(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(
        json.dumps({"prompt": "Q: convert 2 km to m\nA:", "completion": " 2000"}) + "\n\n"
        + json.dumps({"prompt": "Q: uppercase ab\nA:", "completion": " AB\n"}) + "\n"
    )
    assert load_golden_set(path) == [
        GoldenPrompt("Q: convert 2 km to m\nA:", "2000"),
        GoldenPrompt("Q: uppercase ab\nA:", "AB"),
    ]


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "does not exist; pass a JSONL file"),
        ("", "holds no prompts"),
        ('{"prompt": "x"\n', ":1: not valid JSON"),
        ('{"prompt": "x", "completion": "y"}\n{"prompt": "x"}\n', ':2: each line needs string fields "prompt" and "completion"'),
        ('["x", "y"]\n', ":1: each line needs"),
    ],
)
def test_load_golden_set_refusals_name_the_problem(tmp_path, content, message):
    path = tmp_path / "g.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(GoldenSetError, match=message):
        load_golden_set(path)


@pytest.mark.parametrize(
    "text,expected",
    [(" 2000", "2000"), (" 2000\nQ: next", "2000"), ("\n2000", ""), ("  AB  ", "AB"), ("", "")],
)
def test_normalise_cuts_at_newline_and_strips(text, expected):
    assert normalise(text) == expected


def test_probe_refuses_an_empty_golden_set():
    with pytest.raises(ValueError, match="at least one golden prompt"):
        probe("http://127.0.0.1:1", None, [], "m")


def test_quality_result_round_trips():
    r = QualityResult(0.5, 0.75, 4, [{"prompt": "p", "expected": "e", "got": "g"}])
    assert QualityResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
