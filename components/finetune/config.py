"""Fine-tuning configuration."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from components.finetune.errors import FinetuneConfigError

METHODS = ("full", "lora")


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune. Defaults teach the random ``bootstrap://tiny`` model the task in about a minute on 2 CPU cores."""

    method: str = "full"  # "full" (all weights) or "lora" (low-rank adapters, peft)
    max_steps: int = 600  # optimizer steps; training stops here
    learning_rate: float = 2e-3  # peak learning rate (after warmup)
    batch_size: int = 32  # examples per step
    seed: int = 0  # seeds batch order, dropout and LoRA init: same seed -> same result
    time_budget_s: float | None = None  # stop (and save) once training has run this long
    warmup_steps: int = 20  # linear warmup (capped at max_steps // 2), then linear decay to zero at max_steps
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping
    max_length: int = 128  # longest tokenized example; longer prompts are cut from the left
    checkpoint_every: int = 100  # save a resumable checkpoint every N steps (0 = never)
    keep_checkpoints: int = 2  # how many recent checkpoints to keep
    log_every: int = 25  # log the running loss every N steps
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA scaling numerator
    lora_dropout: float = 0.0  # dropout on the LoRA path
    lora_target_modules: tuple[str, ...] | None = None  # module names to adapt (None: peft's default for the architecture)
    merge_adapter: bool = True  # LoRA: merge into the base weights and save a plain model folder

    def validate(self) -> "FinetuneConfig":
        """Check every field; return self so calls chain.

        Raises:
            FinetuneConfigError: naming the first invalid field and its allowed range.
        """
        def bad(field: str, why: str) -> FinetuneConfigError:
            return FinetuneConfigError(f"FinetuneConfig.{field}={getattr(self, field)!r}: {why}")

        if self.method not in METHODS:
            raise bad("method", f"unknown method; use one of {', '.join(METHODS)}")
        for name in ("max_steps", "batch_size", "max_length", "lora_r", "lora_alpha", "keep_checkpoints", "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise bad(name, "must be a positive integer")
        if not (0 < self.learning_rate <= 1):
            raise bad("learning_rate", "must be in (0, 1]")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise bad("warmup_steps", "must be an integer >= 0")
        if self.checkpoint_every < 0:
            raise bad("checkpoint_every", "must be >= 0 (0 disables checkpoints)")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise bad("time_budget_s", "must be positive seconds, or None for no budget")
        if not (0 <= self.lora_dropout < 1):
            raise bad("lora_dropout", "must be in [0, 1)")
        if self.weight_decay < 0:
            raise bad("weight_decay", "must be >= 0")
        if self.max_grad_norm <= 0:
            raise bad("max_grad_norm", "must be positive")
        if self.max_length < 8:
            raise bad("max_length", "must be at least 8 tokens")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_target_modules"] = list(self.lora_target_modules) if self.lora_target_modules else None
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "FinetuneConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise FinetuneConfigError(f"unknown FinetuneConfig fields: {', '.join(sorted(unknown))}")
        data = dict(data)
        # JSON carried through pipeline parameters turns 32 into 32.0: restore whole numbers
        for name, f in cls.__dataclass_fields__.items():
            value = data.get(name)
            if f.type in (int, "int") and isinstance(value, float) and value.is_integer():
                data[name] = int(value)
        if data.get("lora_target_modules") is not None:
            data["lora_target_modules"] = tuple(data["lora_target_modules"])
        return cls(**data)

    def fingerprint(self) -> str:
        """Hash of the fields that change what a step computes (not the stopping rules), for resume checks."""
        d = self.to_dict()
        for k in ("max_steps", "time_budget_s", "checkpoint_every", "keep_checkpoints", "log_every"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
