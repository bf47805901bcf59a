"""Generated task data: unit conversions and case changes, learnable by a tiny model.

Every example is made by code from a seed, so exact-match accuracy is a fair,
reproducible metric: the answer is a deterministic function of the prompt, and
train / eval / test splits never share a prompt (split by a hash of the prompt).

Files are JSONL, one object per line, in one of two forms:

* ``{"prompt": "...", "completion": "..."}``
* ``{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}``
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

# (from unit, to unit, factor): answers are the number with zeros appended,
# a copy-and-extend pattern a few-million-parameter model learns in minutes.
CONVERSIONS: tuple[tuple[str, str, int], ...] = (
    ("km", "m", 1000),
    ("m", "cm", 100),
    ("cm", "mm", 10),
    ("kg", "g", 1000),
    ("l", "ml", 1000),
    ("kw", "w", 1000),
)
_LETTERS = "abcdefghijklmnopqrstuvwxyz"

SPLITS = ("train", "eval", "test")


@dataclass(frozen=True)
class Example:
    """One prompt and its single correct completion."""

    prompt: str  # the instruction, ending with a newline-free question
    completion: str  # the exact answer, without leading space or newline

    def as_prompt_completion(self) -> dict:
        return {"prompt": self.prompt, "completion": self.completion}

    def as_chat(self) -> dict:
        return {
            "messages": [
                {"role": "user", "content": self.prompt},
                {"role": "assistant", "content": self.completion},
            ]
        }


def prompt_template(question: str) -> str:
    """The plain-text prompt format shared by training, evaluation and serving."""
    return f"Q: {question}\nA:"


def _conversion(rng: random.Random) -> Example:
    src, dst, factor = rng.choice(CONVERSIONS)
    n = rng.randint(1, 999)
    return Example(prompt_template(f"convert {n} {src} to {dst}"), f" {n * factor}")


def _upper(rng: random.Random) -> Example:
    word = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 6)))
    return Example(prompt_template(f"uppercase {word}"), f" {word.upper()}")


_TASKS = (_conversion, _upper)


def split_of(prompt: str, eval_share: float = 0.1, test_share: float = 0.1) -> str:
    """Stable split assignment by prompt hash, so splits never overlap."""
    h = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") / 2**64
    if h < eval_share:
        return "eval"
    if h < eval_share + test_share:
        return "test"
    return "train"


def generate(split: str, count: int, seed: int = 0) -> list[Example]:
    """Generate ``count`` distinct examples belonging to ``split``.

    Args:
        split: one of ``train``, ``eval``, ``test``.
        count: number of examples wanted.
        seed: random seed; the same seed gives the same examples.

    Raises:
        ValueError: unknown split or a count the task space cannot supply.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    rng = random.Random(f"{seed}:{split}")
    seen: set[str] = set()
    out: list[Example] = []
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > count * 200:
            raise ValueError(f"could not generate {count} distinct {split} examples")
        ex = rng.choice(_TASKS)(rng)
        if ex.prompt in seen or split_of(ex.prompt) != split:
            continue
        seen.add(ex.prompt)
        out.append(ex)
    return out


def write_jsonl(examples: list[Example], path: str | Path, chat: bool = False) -> Path:
    """Write examples as JSONL (prompt/completion, or chat ``messages`` form)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(ex.as_chat() if chat else ex.as_prompt_completion()) + "\n")
    tmp.replace(path)
    return path


def write_task_dataset(
    out_dir: str | Path, train: int = 4000, eval: int = 200, test: int = 200, seed: int = 0
) -> dict[str, Path]:
    """Write ``train.jsonl``, ``eval.jsonl`` and ``test.jsonl`` under ``out_dir``."""
    out_dir = Path(out_dir)
    return {
        name: write_jsonl(generate(name, n, seed), out_dir / f"{name}.jsonl")
        for name, n in (("train", train), ("eval", eval), ("test", test))
    }


def tokenizer_corpus(seed: int = 0, count: int = 3000) -> list[str]:
    """Text used to train the bootstrap tokenizer: task text plus every byte-ish character."""
    rng = random.Random(f"{seed}:corpus")
    lines = []
    for _ in range(count):
        ex = rng.choice(_TASKS)(rng)
        lines.append(ex.prompt + ex.completion)
    lines.append(_LETTERS + _LETTERS.upper() + "0123456789 .,:;!?'\"()-+*/=\n")
    return lines


def default_golden_set(n: int = 20, seed: int = 0) -> list:
    """``n`` golden prompts (``serving.rollout.quality.GoldenPrompt``) from the ``test`` split (never trained on).

    The canary's quality probe takes its golden set as data; this is the one the bootstrap task provides.
    """
    from serving.rollout.quality import GoldenPrompt

    return [GoldenPrompt(ex.prompt, ex.completion.strip()) for ex in generate("test", n, seed)]
