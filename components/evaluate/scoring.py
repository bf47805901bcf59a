"""Model metrics: exact match (greedy, batched), answer perplexity, generation speed at batch 1."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from components.finetune.data import read_records

# The fixed prompt set for speed figures: the same for every model, so runs compare.
SPEED_PROMPTS: tuple[str, ...] = (
    "Q: convert 12 km to m\nA:",
    "Q: uppercase bright\nA:",
    "Q: convert 450 kg to g\nA:",
    "Q: uppercase model\nA:",
    "Q: convert 7 l to ml\nA:",
)
SPEED_NEW_TOKENS = 32


@dataclass(frozen=True)
class EvalItem:
    prompt: str  # text the model continues
    answer: str  # the expected completion, stripped
    completion: str  # the completion as trained (for perplexity)


def load_eval_items(path: str | Path, tokenizer, max_examples: int | None = None) -> list[EvalItem]:
    """Read an eval JSONL (prompt/completion or chat) into items; errors name file and line."""
    items = []
    for _, rec in read_records(path):
        if "messages" in rec:
            msgs = rec["messages"]
            last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
            prompt = tokenizer.apply_chat_template(msgs[:last], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(msgs[: last + 1], tokenize=False)
            completion = full[len(prompt):] if full.startswith(prompt) else " " + msgs[last]["content"]
            # The template may append eos after the answer; perplexity adds eos itself.
            if tokenizer.eos_token and tokenizer.eos_token in completion:
                completion = completion[: completion.index(tokenizer.eos_token)]
            items.append(EvalItem(prompt, msgs[last]["content"].strip(), completion))
        else:
            items.append(EvalItem(rec["prompt"], rec["completion"].strip(), rec["completion"]))
        if max_examples is not None and len(items) >= max_examples:
            break
    return items


def clean_generation(text: str) -> str:
    """The answer part of a generation: up to the first newline, stripped."""
    return text.split("\n", 1)[0].strip()


def exact_match(model, tokenizer, items: list[EvalItem], batch_size: int = 32, max_positions: int | None = None):
    """Greedy-generate every prompt; return (percent correct, predictions)."""
    import torch

    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    preds: list[str] = []
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        enc = tokenizer([it.prompt for it in chunk], return_tensors="pt", padding=True).to(device)
        want = max(len(tokenizer(it.answer, add_special_tokens=False).input_ids) for it in chunk) + 4
        if max_positions:
            want = max(1, min(want, max_positions - enc.input_ids.shape[1]))
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=want, do_sample=False, pad_token_id=pad,
                                 eos_token_id=tokenizer.eos_token_id)
        for row in out[:, enc.input_ids.shape[1]:]:
            preds.append(clean_generation(tokenizer.decode(row, skip_special_tokens=True)))
    correct = sum(p == it.answer for p, it in zip(preds, items))
    return 100.0 * correct / max(1, len(items)), preds


def answer_perplexity(model, tokenizer, items: list[EvalItem], batch_size: int = 32, max_positions: int | None = None):
    """Perplexity of the expected completions (eos included) given their prompts; returns (ppl, mean nll)."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total_nll, total_tok = 0.0, 0
    for i in range(0, len(items), batch_size):
        rows = []
        for it in items[i : i + batch_size]:
            p = tokenizer(it.prompt).input_ids
            c = tokenizer(it.completion, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
            ids, labels = p + c, [-100] * len(p) + c
            if max_positions and len(ids) > max_positions:
                ids, labels = ids[-max_positions:], labels[-max_positions:]
            rows.append((ids, labels))
        width = max(len(r[0]) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, (a, b) in enumerate(rows):
            ids[j, : len(a)] = torch.tensor(a)
            labels[j, : len(b)] = torch.tensor(b)
            mask[j, : len(a)] = 1
        ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total_nll += float(nll)
        total_tok += int((shift_labels != -100).sum())
    mean = total_nll / max(1, total_tok)
    return math.exp(min(mean, 700)), mean


def generation_speed(model, tokenizer, prompts=SPEED_PROMPTS, new_tokens: int = SPEED_NEW_TOKENS,
                     clock: Callable[[], float] = time.perf_counter, max_positions: int | None = None) -> dict:
    """Median time to first token (ms) and generated tokens/s (prefill included) at batch 1 over a fixed prompt set."""
    import statistics

    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ttfts, rates = [], []

    def run(enc, n):
        with torch.no_grad():
            return model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=pad)

    for k, prompt in enumerate(prompts):
        enc = tokenizer(prompt, return_tensors="pt").to(device)
        n = new_tokens if not max_positions else max(2, min(new_tokens, max_positions - enc.input_ids.shape[1]))
        if k == 0:
            run(enc, n)  # warm-up
        t0 = clock()
        run(enc, 1)
        t1 = clock()
        run(enc, n)
        t2 = clock()
        ttfts.append((t1 - t0) * 1000)
        # End-to-end rate of one request at batch 1 (prefill included), as a client sees it.
        rates.append(n / max(1e-9, t2 - t1))
    return {"ttft_ms": statistics.median(ttfts), "tokens_per_s": statistics.median(rates),
            "speed_prompts": len(prompts), "speed_new_tokens": new_tokens}


def load_model(model_dir: Path):
    """Load a model folder (plain, or a LoRA adapter folder) and its tokenizer for inference."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trust = False
    manifest = model_dir / "llmops_manifest.json"
    if manifest.exists():
        trust = bool(json.loads(manifest.read_text()).get("trust_remote_code"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if (model_dir / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(model_dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=trust)
    model.to(device).eval()
    cfg = model.config
    max_positions = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
    return model, tokenizer, max_positions
