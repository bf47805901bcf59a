"""How a canary advances: traffic steps, analysis cadence, and what to do when unsure.

A :class:`RolloutStrategy` is plain configuration (Flagger's ``analysis`` block,
Argo Rollouts' ``steps``); the controller reads it and never changes it.
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

import enum
from dataclasses import dataclass, field
from typing import Any


class StrategyError(LlmopsError, ValueError):
    """An impossible strategy setting; the message names the field and the fix."""


class InconclusivePolicy(str, enum.Enum):
    """What an INCONCLUSIVE interval (too little traffic, no verdict) leads to."""

    PAUSE = "pause"  # stay on the step and keep measuring until the judge decides (Argo Rollouts); never rolls back
    ROLLBACK = "rollback"  # treat as a failure at once
    HOLD = "hold"  # stay on the step for up to ``max_inconclusive`` intervals, then roll back
    PROMOTE = "promote"  # treat as a success (only for services with no users)

    @classmethod
    def parse(cls, value: "str | InconclusivePolicy") -> "InconclusivePolicy":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise StrategyError(
                f"on_inconclusive: unknown policy {value!r}; use one of {', '.join(p.value for p in cls)}"
            ) from None


def parse_steps(text: str) -> tuple[int, ...]:
    """Parse ``"10,25,50,100"`` into ``(10, 25, 50, 100)``.

    Raises:
        StrategyError: a part is not an integer.
    """
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise StrategyError(f"steps: {text!r} is not a comma-separated list of integers, e.g. 10,25,50,100") from None


@dataclass(frozen=True)
class RolloutStrategy:
    """The canary plan the controller follows."""

    steps: tuple[int, ...] = (10, 25, 50, 100)  # canary traffic percent per step; increasing, ends at 100
    interval_s: float = 60.0  # length of one analysis interval, seconds
    intervals_per_step: int = 1  # successful intervals needed before the next step
    failure_limit: int = 1  # FAILED/ERROR intervals tolerated in total before rolling back (>= 1)
    on_inconclusive: InconclusivePolicy = InconclusivePolicy.PAUSE  # see InconclusivePolicy
    max_inconclusive: int = 3  # HOLD: consecutive inconclusive intervals before rolling back
    ready_timeout_s: float = 600.0  # a canary not ready after this long is a failure
    warmup_s: float = 0.0  # after the canary is first ready, let it serve this long before measuring (cold start)
    bake_s: float = 0.0  # after promotion, keep analysing this long; a regression still rolls back
    lease_ttl_s: float = 120.0  # a controller that stops renewing for this long loses the lease
    quality_probe: bool = True  # probe canary vs stable through tag routing when addresses exist
    analysis_policy: Any = None  # serving.rollout.analysis.AnalysisPolicy (None: its defaults)
    extra: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # free-form notes for the report

    def validate(self) -> None:
        """Raise :class:`StrategyError` naming the first impossible field."""
        if not self.steps:
            raise StrategyError("steps: at least one step is needed, e.g. 10,25,50,100")
        if any(not isinstance(s, int) or isinstance(s, bool) for s in self.steps):
            raise StrategyError(f"steps: every step must be an integer percent, got {self.steps}")
        if any(s <= 0 or s > 100 for s in self.steps):
            raise StrategyError(f"steps: every step must be in 1..100, got {list(self.steps)}")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise StrategyError(f"steps: must be strictly increasing, got {list(self.steps)}")
        if self.steps[-1] != 100:
            raise StrategyError(
                f"steps: the last step must be 100 (full traffic before promotion), got {list(self.steps)}; "
                f"append 100"
            )
        if self.interval_s <= 0:
            raise StrategyError(f"interval_s: must be > 0 seconds, got {self.interval_s}")
        if self.intervals_per_step < 1:
            raise StrategyError(f"intervals_per_step: must be >= 1, got {self.intervals_per_step}")
        if self.failure_limit < 1:
            raise StrategyError(f"failure_limit: must be >= 1, got {self.failure_limit}")
        InconclusivePolicy.parse(self.on_inconclusive)
        if self.max_inconclusive < 1:
            raise StrategyError(f"max_inconclusive: must be >= 1, got {self.max_inconclusive}")
        if self.ready_timeout_s <= 0:
            raise StrategyError(f"ready_timeout_s: must be > 0 seconds, got {self.ready_timeout_s}")
        if self.warmup_s < 0:
            raise StrategyError(f"warmup_s: must be >= 0 seconds, got {self.warmup_s}")
        if self.bake_s < 0:
            raise StrategyError(f"bake_s: must be >= 0 seconds, got {self.bake_s}")
        if self.lease_ttl_s < self.interval_s:
            raise StrategyError(
                f"lease_ttl_s: {self.lease_ttl_s}s is shorter than one interval ({self.interval_s}s); "
                "the lease would expire while the controller waits"
            )

    @property
    def inconclusive_policy(self) -> InconclusivePolicy:
        return InconclusivePolicy.parse(self.on_inconclusive)

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "interval_s": self.interval_s,
            "intervals_per_step": self.intervals_per_step,
            "failure_limit": self.failure_limit,
            "on_inconclusive": self.inconclusive_policy.value,
            "max_inconclusive": self.max_inconclusive,
            "ready_timeout_s": self.ready_timeout_s,
            "warmup_s": self.warmup_s,
            "bake_s": self.bake_s,
            "lease_ttl_s": self.lease_ttl_s,
        }
