"""Answer-quality probe: golden prompts sent to the canary and the stable revision.

Latency and error rates do not show a model that answers fast and wrong. The
probe sends a small golden set of prompts with known answers to both revisions
through their OpenAI-compatible endpoint (``{url}/openai/v1``, greedy decoding)
and scores exact match: the completion, cut at the first newline and stripped,
must equal the expected answer stripped. Scores are fractions in ``[0, 1]``.

Errors::

    QualityError
    ├── GoldenSetError      the golden-set file is missing or malformed (names the line)
    └── QualityProbeError   a revision could not be reached or answered badly (names the URL)
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from llmops_core.errors import LlmopsError

from serving.cluster.names import PROBE_HEADER

log = logging.getLogger(__name__)


class QualityError(LlmopsError):
    """Base class for quality probe errors."""


class GoldenSetError(QualityError, ValueError):
    """The golden set cannot be loaded."""


class QualityProbeError(QualityError):
    """A revision could not be probed (network error, bad answer)."""


@dataclass(frozen=True)
class GoldenPrompt:
    """One prompt and the answer a good model gives to it."""

    prompt: str  # sent as is, e.g. "Q: convert 3 km to m\nA:"
    expected: str  # the exact answer, compared after strip()


@dataclass(frozen=True)
class QualityResult:
    """Exact-match scores of both revisions on the same golden prompts."""

    canary_score: float  # fraction of prompts the canary answered exactly, 0..1
    stable_score: float | None  # same for stable; None when no stable was probed
    n: int  # prompts sent to each revision
    failures: list[dict[str, Any]] = field(default_factory=list)  # canary misses: prompt, expected, got

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QualityResult":
        return cls(
            canary_score=data["canary_score"],
            stable_score=data.get("stable_score"),
            n=data["n"],
            failures=list(data.get("failures", [])),
        )


def load_golden_set(path: str | Path) -> list[GoldenPrompt]:
    """Read a JSONL golden set: one ``{"prompt": ..., "completion": ...}`` per line.

    Raises:
        GoldenSetError: missing file, bad JSON, missing fields, or no prompts.
    """
    path = Path(path)
    if not path.is_file():
        raise GoldenSetError(f"golden set {path} does not exist; pass a JSONL file of prompt/completion objects")
    out: list[GoldenPrompt] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise GoldenSetError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            if (
                not isinstance(obj, dict)
                or not isinstance(obj.get("prompt"), str)
                or not isinstance(obj.get("completion"), str)
            ):
                raise GoldenSetError(
                    f'{path}:{lineno}: each line needs string fields "prompt" and "completion"'
                )
            out.append(GoldenPrompt(obj["prompt"], obj["completion"].strip()))
    if not out:
        raise GoldenSetError(f"golden set {path} holds no prompts")
    return out


def normalise(text: str) -> str:
    """The part of a completion that is compared: up to the first newline, stripped."""
    return text.split("\n", 1)[0].strip()


def _answers(url: str, prompts: Sequence[GoldenPrompt], model: str, max_tokens: int, timeout_s: float,
             openai_base: str = "/openai/v1") -> list[str]:
    import openai

    base = f"{url.rstrip('/')}{openai_base}"
    client = openai.OpenAI(base_url=base, api_key="none", timeout=timeout_s, max_retries=0)
    out: list[str] = []
    try:
        for gp in prompts:
            resp = client.completions.create(
                model=model,
                prompt=gp.prompt,
                max_tokens=max_tokens,
                temperature=0,
                stop=["\n"],
                extra_headers={PROBE_HEADER: "quality"},
            )
            if not resp.choices:
                raise QualityProbeError(f"{base}/completions answered with no choices for model {model!r}")
            out.append(resp.choices[0].text or "")
    except openai.APIConnectionError as exc:  # includes timeouts
        raise QualityProbeError(f"cannot reach {base}: {exc}") from exc
    except openai.APIStatusError as exc:
        raise QualityProbeError(
            f"{base}/completions answered HTTP {exc.status_code} for model {model!r}: {exc.message}"
        ) from exc
    except openai.OpenAIError as exc:
        raise QualityProbeError(f"probe of {base} failed: {exc}") from exc
    finally:
        client.close()
    return out


def _score(prompts: Sequence[GoldenPrompt], answers: Sequence[str]) -> tuple[float, list[dict[str, Any]]]:
    misses = [
        {"prompt": gp.prompt, "expected": gp.expected, "got": normalise(got)}
        for gp, got in zip(prompts, answers)
        if normalise(got) != gp.expected.strip()
    ]
    return (len(prompts) - len(misses)) / len(prompts), misses


def probe(
    canary_url: str,
    stable_url: str | None,
    prompts: Sequence[GoldenPrompt],
    model: str,
    max_tokens: int = 16,
    timeout_s: float = 10,
    openai_base: str = "/openai/v1",
) -> QualityResult:
    """Score both revisions on ``prompts`` (exact match, greedy decoding).

    Args:
        canary_url: base URL of the canary revision (its tag-routed address).
        stable_url: base URL of the stable revision, or ``None`` to probe the canary only.
        prompts: the golden set.
        model: model name as the server knows it (the OpenAI ``model`` field).
        max_tokens: completion length limit.
        timeout_s: per-request timeout.
        openai_base: path of the runtime's OpenAI routes (``RuntimeProfile.openai_base``; vLLM: ``/v1``).

    Raises:
        ValueError: no prompts.
        QualityProbeError: a revision cannot be reached or answered with an error.
    """
    if not prompts:
        raise ValueError("probe needs at least one golden prompt; use components.bootstrap.dataset.default_golden_set() or load_golden_set(path)")
    canary_answers = _answers(canary_url, prompts, model, max_tokens, timeout_s, openai_base)
    canary_score, misses = _score(prompts, canary_answers)
    stable_score = None
    if stable_url is not None:
        stable_score, _ = _score(prompts, _answers(stable_url, prompts, model, max_tokens, timeout_s, openai_base))
    log.info(
        "quality probe: canary %.2f, stable %s on %d prompts",
        canary_score,
        "n/a" if stable_score is None else f"{stable_score:.2f}",
        len(prompts),
    )
    return QualityResult(canary_score, stable_score, len(prompts), misses)
