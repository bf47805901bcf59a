"""Training data: JSONL in prompt/completion or chat form, validated, tokenized and loss-masked.

Every record is checked before any training starts, and errors name the file
and line. Labels are ``-100`` (ignored by the loss) on prompt tokens, non-assistant
chat turns and padding, so the model learns only the answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from components.finetune.errors import DatasetError

IGNORE = -100
EXPECTED_KEYS = '{"prompt": str, "completion": str} or {"messages": [{"role": ..., "content": ...}, ...]}'
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Example:
    """One tokenized training example."""

    input_ids: list[int]
    labels: list[int]  # same length; IGNORE where no loss is taken


@dataclass(frozen=True)
class TokenizedDataset:
    """Tokenized examples plus facts for the run record."""

    examples: list[Example]
    path: Path
    form: str  # "prompt_completion" or "chat"
    truncated: int  # examples cut to max_length

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def supervised_tokens(self) -> int:
        return sum(sum(1 for t in e.labels if t != IGNORE) for e in self.examples)


def read_records(path: str | Path) -> list[tuple[int, dict]]:
    """Parse and validate a JSONL file; return ``(line number, record)`` pairs.

    Raises:
        DatasetError: missing or empty file, malformed JSON, wrong keys or value types.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "file not found")
    if not path.is_file():
        raise DatasetError(path, "not a file; pass a JSONL file")
    records: list[tuple[int, dict]] = []
    form = None
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(
                    path, f"is not UTF-8 (byte {exc.object[exc.start]:#04x} at column {exc.start + 1}); "
                    "re-encode the file as UTF-8 (e.g. iconv -t UTF-8)", lineno,
                ) from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(path, f"malformed JSON ({exc.msg} at column {exc.colno})", lineno) from None
            if not isinstance(rec, dict):
                raise DatasetError(path, f"expected a JSON object {EXPECTED_KEYS}, got {type(rec).__name__}", lineno)
            this = _validate(path, lineno, rec)
            if form is not None and this != form:
                raise DatasetError(path, f"mixes record forms ({form} before, {this} here); use one form per file", lineno)
            form = this
            records.append((lineno, rec))
    if not records:
        raise DatasetError(path, f"is empty; expected one JSON object per line: {EXPECTED_KEYS}")
    return records


def _validate(path: Path, lineno: int, rec: dict) -> str:
    if "prompt" in rec or "completion" in rec:
        for key in ("prompt", "completion"):
            if key not in rec:
                raise DatasetError(path, f"missing key {key!r}; expected keys: {EXPECTED_KEYS}", lineno)
            if not isinstance(rec[key], str):
                raise DatasetError(path, f"{key!r} must be a string, got {type(rec[key]).__name__}", lineno)
        if not rec["completion"].strip():
            raise DatasetError(path, "'completion' is empty", lineno)
        return "prompt_completion"
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DatasetError(path, "'messages' must be a non-empty list of {role, content} objects", lineno)
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise DatasetError(path, f"messages[{i}] must be an object with string 'role' and 'content'", lineno)
            if m["role"] not in ROLES:
                raise DatasetError(path, f"messages[{i}].role {m['role']!r} unknown; use one of {', '.join(ROLES)}", lineno)
        if not any(m["role"] == "assistant" for m in msgs):
            raise DatasetError(path, "'messages' has no assistant turn to learn from", lineno)
        return "chat"
    raise DatasetError(path, f"unexpected keys {sorted(rec)}; expected {EXPECTED_KEYS}", lineno)


def _fit(ids: list[int], labels: list[int], max_length: int) -> tuple[list[int], list[int], bool]:
    if len(ids) <= max_length:
        return ids, labels, False
    first = next((i for i, t in enumerate(labels) if t != IGNORE), 0)
    cut = min(len(ids) - max_length, first)  # drop prompt tokens from the left first
    ids, labels = ids[cut:], labels[cut:]
    return ids[:max_length], labels[:max_length], True


def _prompt_completion(tokenizer, rec: dict) -> tuple[list[int], list[int]]:
    p = tokenizer(rec["prompt"]).input_ids
    c = tokenizer(rec["completion"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return p + c, [IGNORE] * len(p) + c


def _chat(tokenizer, rec: dict, path: Path, lineno: int) -> tuple[list[int], list[int]]:
    msgs = rec["messages"]
    ids: list[int] = []
    labels: list[int] = []
    prev = ""
    for i in range(len(msgs)):
        text = tokenizer.apply_chat_template(msgs[: i + 1], tokenize=False)
        if not text.startswith(prev):
            raise DatasetError(path, "the tokenizer's chat template does not render turns incrementally", lineno)
        seg = tokenizer(text[len(prev) :], add_special_tokens=False).input_ids
        ids += seg
        labels += seg if msgs[i]["role"] == "assistant" else [IGNORE] * len(seg)
        prev = text
    return ids, labels


def load_dataset(path: str | Path, tokenizer, max_length: int) -> TokenizedDataset:
    """Read, validate and tokenize a training file.

    Args:
        path: JSONL file, prompt/completion or chat ``messages`` form.
        tokenizer: a Hugging Face tokenizer with an eos token (and a chat template for chat data).
        max_length: longest example in tokens; longer ones lose prompt tokens from the left.

    Returns:
        The tokenized, loss-masked examples.

    Raises:
        DatasetError: any problem, with file and line.
    """
    path = Path(path)
    records = read_records(path)
    form = "chat" if "messages" in records[0][1] else "prompt_completion"
    if tokenizer.eos_token_id is None:
        raise DatasetError(path, "the tokenizer has no eos token; completions must end with one")
    if form == "chat" and not getattr(tokenizer, "chat_template", None):
        raise DatasetError(path, "chat records need a tokenizer with a chat template; use prompt/completion form")
    examples, truncated = [], 0
    for lineno, rec in records:
        ids, labels = _chat(tokenizer, rec, path, lineno) if form == "chat" else _prompt_completion(tokenizer, rec)
        ids, labels, cut = _fit(ids, labels, max_length)
        truncated += cut
        if all(t == IGNORE for t in labels):
            raise DatasetError(path, f"no answer tokens left within max_length={max_length}", lineno)
        examples.append(Example(ids, labels))
    return TokenizedDataset(examples=examples, path=path, form=form, truncated=truncated)


def check_base_model(model_dir: str | Path) -> Path:
    """Refuse a base model folder the way ``llmops import`` does: safetensors only, complete, readable.

    Raises:
        FinetuneError: no config.json, a bad config.json, pickle weights, no or
            corrupt/truncated safetensors (the message says how to fix it).
    """
    from components.finetune.errors import FinetuneError
    from model_registry.errors import InvalidModelFolder
    from model_registry.validation import validate_model_folder

    try:
        return validate_model_folder(model_dir)
    except InvalidModelFolder as exc:
        raise FinetuneError(
            f"base model: {exc} (`llmops import FOLDER --out DIR` checks a model and, with --allow-pickle, "
            "converts pickle weights to safetensors)"
        ) from None
