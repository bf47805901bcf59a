import pytest

from components.evaluate import GatePolicy, GatePolicyError, gate

CHAMP = {"exact_match": 80.0, "perplexity": 2.0, "tokens_per_s": 100.0, "ttft_ms": 10.0}
POLICY = GatePolicy(max_accuracy_drop_points=2.0, max_perplexity_rise_pct=10.0, max_speed_drop_pct=20.0, min_accuracy=50.0)


@pytest.mark.parametrize(
    "candidate, reference, policy, passed, failing",
    [
        # first release: only the minimum accuracy applies
        ({"exact_match": 60.0}, None, POLICY, True, []),
        ({"exact_match": 40.0}, None, POLICY, False, ["min_accuracy"]),
        # better on everything
        ({"exact_match": 90.0, "perplexity": 1.5, "tokens_per_s": 110.0}, CHAMP, POLICY, True, []),
        # within tolerances (exactly at the limits)
        ({"exact_match": 78.0, "perplexity": 2.2, "tokens_per_s": 80.0}, CHAMP, POLICY, True, []),
        # each regression alone
        ({"exact_match": 77.9, "perplexity": 2.0, "tokens_per_s": 100.0}, CHAMP, POLICY, False, ["accuracy_drop"]),
        ({"exact_match": 80.0, "perplexity": 2.3, "tokens_per_s": 100.0}, CHAMP, POLICY, False, ["perplexity_rise"]),
        ({"exact_match": 80.0, "perplexity": 2.0, "tokens_per_s": 70.0}, CHAMP, POLICY, False, ["speed_drop"]),
        # speed is report-only when max_speed_drop_pct is None
        ({"exact_match": 80.0, "perplexity": 2.0, "tokens_per_s": 10.0}, CHAMP, GatePolicy(), True, []),
        # several at once, and min_accuracy still applies with a reference
        ({"exact_match": 30.0, "perplexity": 9.0, "tokens_per_s": 100.0}, CHAMP, POLICY, False,
         ["min_accuracy", "accuracy_drop", "perplexity_rise"]),
        # a reference without perplexity: not compared, not failed
        ({"exact_match": 80.0, "perplexity": 50.0}, {"exact_match": 80.0}, POLICY, True, []),
        # a candidate without accuracy fails
        ({"perplexity": 1.0}, None, POLICY, False, ["min_accuracy"]),
        # NaN perplexity fails the comparison
        ({"exact_match": 80.0, "perplexity": float("nan"), "tokens_per_s": 100.0}, CHAMP, POLICY, False, ["perplexity_rise"]),
    ],
)
def test_gate_table(candidate, reference, policy, passed, failing):
    v = gate(candidate, reference, policy)
    assert v.passed is passed
    assert [c.name for c in v.checks if not c.passed] == failing
    assert len(v.reasons) == (len(failing) if failing else len(v.checks) + (reference is None))
    for name in failing:
        assert any(r.startswith(f"{name} failed: ") for r in v.reasons)


def test_first_release_says_so():
    v = gate({"exact_match": 60.0}, None, POLICY)
    assert v.reasons[0] == "first release: no reference to compare against"
    assert [c.name for c in v.checks] == ["min_accuracy"]


def test_reason_text_names_values_and_limits():
    v = gate({"exact_match": 70.0, "perplexity": 2.0, "tokens_per_s": 100.0}, CHAMP, POLICY)
    assert "accuracy_drop failed: exact match 70.0% vs reference 80.0% (-10.0 points; allowed drop 2)" in v.reasons


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("max_accuracy_drop_points", -1.0, r"GatePolicy.max_accuracy_drop_points=-1.0: must be between 0 and 100"),
        ("max_accuracy_drop_points", 101, r"GatePolicy.max_accuracy_drop_points=101: must be between 0 and 100"),
        ("max_perplexity_rise_pct", -5, r"GatePolicy.max_perplexity_rise_pct=-5: must be >= 0"),
        ("max_speed_drop_pct", 150.0, r"GatePolicy.max_speed_drop_pct=150.0: must be between 0 and 100"),
        ("min_accuracy", float("nan"), r"GatePolicy.min_accuracy=nan: must be a number"),
        ("min_accuracy", "high", r"GatePolicy.min_accuracy='high': must be a number"),
    ],
)
def test_policy_validation_names_the_field(field, value, message):
    with pytest.raises(GatePolicyError, match=message):
        GatePolicy(**{field: value}).validate()
    with pytest.raises(GatePolicyError, match=message):
        gate({"exact_match": 100.0}, None, GatePolicy(**{field: value}))
