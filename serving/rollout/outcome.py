"""What one controller tick saw and did: :class:`StepOutcome` (results are data, Flagger-style)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepOutcome:
    """What one tick saw and did (results are data, Flagger-style)."""

    phase: str  # RolloutPhase value, or "Error"
    action: str  # started | waiting | analysed | advanced | promoted | rolling_back | rolled_back | hooks | done | conflict | already_serving
    weight: int  # canary traffic percent the spec now asks for
    message: str = ""
    done: bool = False  # the rollout reached a terminal phase and its hooks ran
    result: str | None = None  # "promoted" | "rolled_back" once done
    next_check_s: float = 1.0  # when the next tick is useful
    analysis: dict | None = None  # AnalysisResult.to_dict() of an interval that just ended
