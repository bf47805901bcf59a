"""The canary benchmark's baselines count as the real tools do, and its percentiles do not hide misses."""

from __future__ import annotations

import pytest

from benchmarks.canary_detection import FlaggerBase, first_flagger, summarise

BASE = FlaggerBase(p95_s=0.4, ttft_p95_s=0.1, error_rate=0.005)
ALL_BAD = (60, 0.05, 0.9, 0.3)  # errors, p95 and TTFT p95 all past their limits
ONE_BAD = (60, 0.0, 0.9, 0.05)  # only p95
GOOD = (60, 0.0, 0.3, 0.05)


@pytest.mark.parametrize(("intervals", "rolled_back_at"), [
    ([ALL_BAD, GOOD, GOOD, GOOD], None),  # three metrics failing in one analysis run are one failed check
    ([ALL_BAD, ALL_BAD, ALL_BAD], 3),
    ([ONE_BAD, GOOD, ONE_BAD, ONE_BAD], 4),  # failed checks add up across runs, as Flagger's FailedChecks
    ([(0, 0.0, None, None)] * 5, None),  # no traffic: no data, nothing fails
])  # fmt: skip
def test_flagger_counts_one_failed_check_per_analysis_run(intervals, rolled_back_at):
    assert first_flagger(intervals, BASE) == rolled_back_at


def test_percentiles_count_the_runs_never_rolled_back():
    caught_a_quarter = [1, 2, None, None, None, None, None, None]
    d = summarise(caught_a_quarter)
    assert d["rollback_rate"] == 0.25 and d["within_3"] == 0.25
    assert d["median_intervals"] is None and d["p90_intervals"] is None  # not reached: not a small number
    d = summarise([1] * 9 + [None])
    assert d["median_intervals"] == 1 and d["p90_intervals"] == 1
    assert summarise([1] * 8 + [None] * 2)["p90_intervals"] is None
