import json

import pytest

from components.evaluate import GatePolicy, GatePolicyError, ReferenceError_, evaluate
from components.evaluate.scoring import clean_generation
from components.finetune import DatasetError


@pytest.fixture(scope="module")
def small_eval(task_data, tmp_path_factory):
    lines = task_data["eval"].read_text().splitlines()[:12]
    p = tmp_path_factory.mktemp("ev") / "eval.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_clean_generation_stops_at_newline_and_strips():
    assert clean_generation(" 37000\nQ: next") == "37000"
    assert clean_generation("  ABC  ") == "ABC"


def test_first_release_writes_metrics_and_report(micro_model, small_eval, tmp_path):
    r = evaluate(micro_model, small_eval, tmp_path / "out", policy=GatePolicy(min_accuracy=0.0))
    m = r.metrics
    assert m["examples"] == 12 and 0.0 <= m["exact_match"] <= 100.0
    assert m["perplexity"] > 1.0 and m["ttft_ms"] > 0 and m["tokens_per_s"] > 0
    assert r.reference_metrics is None and r.verdict.passed
    saved = json.loads(r.metrics_json.read_text())
    assert saved["metrics"] == m and saved["verdict"]["passed"] is True
    md = r.report_md.read_text()
    assert "Gate verdict: ✅ PASSED" in md and "none (first release)" in md and "| exact match (%) |" in md
    preds = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 12 and {"prompt", "expected", "predicted", "correct"} <= set(preds[0])


def test_untrained_model_fails_a_minimum_accuracy(micro_model, small_eval, tmp_path):
    r = evaluate(micro_model, small_eval, tmp_path / "out", policy=GatePolicy(min_accuracy=50.0))
    assert r.metrics["exact_match"] == 0.0 and not r.verdict.passed
    assert r.verdict.reasons == ["min_accuracy failed: exact match 0.0% < required minimum 50.0%"]
    assert "❌ FAILED" in r.report_md.read_text() and "**FAIL**" in r.report_md.read_text()


def test_reference_model_folder_is_evaluated_too(micro_model, tiny_model, small_eval, tmp_path):
    r = evaluate(micro_model, small_eval, tmp_path / "out", reference=tiny_model, max_examples=6)
    assert r.reference_metrics["examples"] == 6 and r.metrics["examples"] == 6
    assert {c.name for c in r.verdict.checks} == {"min_accuracy", "accuracy_drop", "perplexity_rise", "speed_drop"}
    md = r.report_md.read_text()
    assert f"Reference: `{tiny_model}`" in md


def test_recorded_reference_metrics_gate_the_candidate(micro_model, small_eval, tmp_path):
    champion = tmp_path / "champion.json"
    champion.write_text(json.dumps({"metrics": {"exact_match": 90.0, "perplexity": 1.1, "tokens_per_s": 5.0}}))
    r = evaluate(micro_model, small_eval, tmp_path / "out", reference=champion, max_examples=4)
    assert not r.verdict.passed
    assert [c.name for c in r.verdict.checks if not c.passed] == ["accuracy_drop", "perplexity_rise"]
    assert "| exact match (%) | 0.0 | 90.0 | -90.0 pts |" in r.report_md.read_text()


def test_chat_eval_file(micro_model, tmp_path):
    f = tmp_path / "chat.jsonl"
    rec = {"messages": [{"role": "user", "content": "uppercase abc"}, {"role": "assistant", "content": "ABC"}]}
    f.write_text(json.dumps(rec) + "\n")
    r = evaluate(micro_model, f, tmp_path / "out")
    assert r.metrics["examples"] == 1
    pred = json.loads((tmp_path / "out" / "predictions.jsonl").read_text())
    assert pred["prompt"] == "Q: uppercase abc\nA:" and pred["expected"] == "ABC"


def test_bad_reference_is_refused(micro_model, small_eval, tmp_path):
    with pytest.raises(ReferenceError_, match="does not exist; pass a model folder or a metrics JSON"):
        evaluate(micro_model, small_eval, tmp_path / "out", reference=tmp_path / "nope")
    bad = tmp_path / "bad.json"
    bad.write_text('{"foo": 1}')
    with pytest.raises(ReferenceError_, match="holds none of the expected keys"):
        evaluate(micro_model, small_eval, tmp_path / "out", reference=bad)
    assert not (tmp_path / "out").exists()


def test_bad_eval_file_and_policy_fail_first(micro_model, tmp_path):
    f = tmp_path / "e.jsonl"
    f.write_text('{"prompt": "x"}\n')
    with pytest.raises(DatasetError, match=r"e.jsonl:1: missing key 'completion'"):
        evaluate(micro_model, f, tmp_path / "out")
    with pytest.raises(GatePolicyError, match="GatePolicy.min_accuracy=-1"):
        evaluate(micro_model, f, tmp_path / "out", policy=GatePolicy(min_accuracy=-1))
