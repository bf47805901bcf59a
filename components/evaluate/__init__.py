"""Evaluate a model (exact match, perplexity, speed), gate it against a reference, write a report.

Public API: :func:`evaluate`, :class:`EvalResult`, :func:`gate`, :class:`GatePolicy`,
:class:`GateVerdict`, :class:`CheckResult`, and the :class:`EvaluateError` tree.
"""

from components.evaluate.errors import EvaluateError, GatePolicyError, ReferenceError_
from components.evaluate.evaluator import EvalResult, evaluate, load_reference_metrics, measure
from components.evaluate.gate import CheckResult, GatePolicy, GateVerdict, gate

__all__ = [
    "CheckResult",
    "EvalResult",
    "EvaluateError",
    "GatePolicy",
    "GatePolicyError",
    "GateVerdict",
    "ReferenceError_",
    "evaluate",
    "gate",
    "load_reference_metrics",
    "measure",
]
