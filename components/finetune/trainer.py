"""The fine-tuning loop: full or LoRA, deterministic, bounded, checkpointed and resumable.

A plain PyTorch loop (fast on a few CPU cores, bf16 autocast on a GPU). The
batch for step ``s`` is a pure function of ``(seed, s)`` and checkpoints hold
the trainable weights, optimizer, schedule and RNG state, so a run interrupted
after a checkpoint and re-run resumes there and ends with the same weights as
an uninterrupted run. The same loop runs as one rank of a ``torchrun`` job
(DDP/FSDP, see :mod:`components.finetune.distributed`) when given a
:class:`DistContext` with more than one process; checkpoints can live on shared
storage (a PVC path or an ``s3://`` / ``gs://`` URI, :mod:`components.finetune.storage`).

Outputs under ``out_dir``::

    model/                 the fine-tuned model folder (safetensors + tokenizer + llmops_manifest.json)
    adapter/               LoRA only: the adapter (adapter_config.json + adapter_model.safetensors)
    checkpoints/step-N/    resumable checkpoints (the last ``keep_checkpoints``)
    loss_curve.png/.json   the training loss per step
    finetune_result.json   the FinetuneResult
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from components.finetune.config import FinetuneConfig
from components.finetune.curve import write_loss_curve
from components.finetune.data import IGNORE, TokenizedDataset, check_base_model, load_dataset
from components.finetune.distributed import DistContext, Strategy
from components.finetune.errors import CheckpointError, FinetuneConfigError, FinetuneError
from components.finetune.storage import CheckpointStore, local_checkpoints

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tune run did and where its outputs are."""

    model_dir: Path  # the fine-tuned model folder (merged for LoRA unless merge_adapter=False)
    adapter_dir: Path | None  # LoRA adapter folder, None for full fine-tunes
    method: str  # "full" or "lora"
    steps: int  # optimizer steps done in total (resumed ones included)
    final_loss: float  # mean training loss over the last (up to) 10 steps
    loss_curve_png: Path
    loss_curve_json: Path
    tokens_per_s: float  # non-padding tokens processed per second in this invocation
    wall_s: float  # training time of this invocation
    resumed_from_step: int | None  # checkpoint step this invocation started from
    stopped_by: str  # "max_steps" or "time_budget"
    dataset_sha256: str  # hex sha256 of the training file
    examples: int  # training examples
    device: str  # "cpu" or "cuda"
    world_size: int = 1  # processes that trained (torchrun), 1 for the single-pod path

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def batch_indices(n: int, step: int, seed: int, batch_size: int) -> list[int]:
    """The example indices of step ``step``'s global batch: a pure function of ``(seed, step)``."""
    rng = random.Random(f"{seed}:{step}")
    return rng.sample(range(n), batch_size) if batch_size <= n else [rng.randrange(n) for _ in range(batch_size)]


def _batch(data: TokenizedDataset, step: int, seed: int, batch_size: int, pad_id: int, rank: int = 0, world: int = 1):
    import torch

    idx = batch_indices(len(data), step, seed, batch_size)
    per = batch_size // world
    rows = [data.examples[i] for i in idx[rank * per : (rank + 1) * per]]  # this rank's slice of the global batch
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.input_ids)] = torch.tensor(r.input_ids)
        labels[i, : len(r.labels)] = torch.tensor(r.labels)
        mask[i, : len(r.input_ids)] = 1
    return ids, mask, labels


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def _checkpoints(root: Path) -> list[Path]:
    return local_checkpoints(root)


def _trainable(model) -> dict:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(root: Path, step: int, model, opt, sched, losses: list[float], meta: dict, keep: int,
                     rng_states: list | None = None) -> Path:
    import torch
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    staging = root / f".staging-{step}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    save_file({n: p.detach().cpu().contiguous() for n, p in _trainable(model).items()}, str(staging / "trainable.safetensors"))
    blob = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state()}
    if rng_states is not None:  # one per rank: dropout on each rank resumes its own stream
        blob["torch_rng_ranks"] = rng_states
    torch.save(blob, staging / "optimizer.pt")
    (staging / "state.json").write_text(json.dumps({"step": step, "losses": losses, **meta}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    for old in _checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint saved at step %d: %s", step, final)
    return final


def _load_checkpoint(path: Path, model, opt, sched, meta: dict, ctx: DistContext = DistContext()) -> tuple[int, list[float]]:
    import torch
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    for key in ("config_fingerprint", "dataset_sha256", "base_digest", "method"):
        if state.get(key) != meta[key]:
            raise CheckpointError(
                f"checkpoint {path} was written with a different {key.replace('_', ' ')} "
                f"({state.get(key)!r}, now {meta[key]!r}); delete {path.parent} or use another out_dir"
            )
    weights = load_file(path / "trainable.safetensors")
    params = _trainable(model)
    if set(weights) != set(params):
        raise CheckpointError(f"checkpoint {path} does not match the model's trainable parameters")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n].to(p.device))
    blob = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    opt.load_state_dict(blob["optimizer"])
    sched.load_state_dict(blob["scheduler"])
    ranks = blob.get("torch_rng_ranks")
    torch.set_rng_state(ranks[ctx.rank] if ranks and len(ranks) == ctx.world_size else blob["torch_rng"])
    return int(state["step"]), list(state["losses"])


def _max_positions(model_dir: Path) -> int | None:
    cfg = json.loads((model_dir / "config.json").read_text())
    return cfg.get("n_positions") or cfg.get("max_position_embeddings")


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("fine-tune"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(), console=console, disable=not console.is_terminal, transient=False,
    )


def finetune(
    model_dir: str | Path,
    train_file: str | Path,
    out_dir: str | Path,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    clock: Callable[[], float] = time.monotonic,
    on_step: Callable[[int, float], None] | None = None,
    checkpoint_uri: str | Path | None = None,
    dist: DistContext | None = None,
) -> FinetuneResult | None:
    """Fine-tune the model in ``model_dir`` on ``train_file``.

    Args:
        model_dir: a Hugging Face model folder (safetensors), e.g. an import output.
        train_file: JSONL, prompt/completion or chat form (see :mod:`components.finetune.data`).
        out_dir: where ``model/``, checkpoints and the loss curve go; re-running with the same
            out_dir after an interruption resumes from the last checkpoint.
        config: hyper-parameters and stopping rules (validated first).
        clock: seconds source for the time budget and speed figures (injectable for tests).
        on_step: called with ``(step, loss)`` after every optimizer step.
        checkpoint_uri: where checkpoints live: a PVC path, or ``s3://`` / ``gs://`` (fsspec); a
            retried task or restarted TrainJob pointing at the same location resumes there.
            Default: ``out_dir/checkpoints``.
        dist: this process's rank in a torchrun job; None (or one process) is the single-pod path.

    Returns:
        The run's :class:`FinetuneResult` (None on ranks other than 0 of a distributed run).

    Raises:
        FinetuneConfigError: invalid config.
        DatasetError: unusable dataset (before any training).
        CheckpointError: out_dir holds checkpoints from a different run.
        FinetuneError: the model folder cannot be loaded.
    """
    config.validate()
    ctx = (dist or DistContext()).validate(config.batch_size)
    if ctx.strategy is Strategy.FSDP and ctx.enabled and config.checkpoint_every:
        raise FinetuneConfigError("FinetuneConfig.checkpoint_every: checkpoints are not written under FSDP yet; "
                                  "set checkpoint_every=0 or use the ddp strategy")
    model_dir, train_file, out_dir = Path(model_dir), Path(train_file), Path(out_dir)
    check_base_model(model_dir)  # safetensors only, as on every entry point

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from components.import_model.manifest import build_manifest, content_digest, file_sha256, write_manifest

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    max_length = min(config.max_length, _max_positions(model_dir) or config.max_length)
    data = load_dataset(train_file, tokenizer, max_length)  # fails before the model is loaded
    dataset_sha = file_sha256(train_file)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    log.info("dataset %s: %d %s examples, %d answer tokens, %d truncated to %d tokens",
             train_file, len(data), data.form, data.supervised_tokens, data.truncated, max_length)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if ctx.enabled:
        from components.finetune.distributed import init_process_group

        init_process_group(ctx, device)
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_target_modules) if config.lora_target_modules else None,
            task_type="CAUSAL_LM",
        ))
    model.to(f"cuda:{ctx.local_rank}" if device == "cuda" and ctx.enabled else device)
    core = model  # the unwrapped model: checkpoints and the saved model come from it
    if ctx.enabled:
        from components.finetune.distributed import wrap_model

        if ctx.rank:  # rank 0 draws dropout from the single-process stream; the others from their own
            torch.manual_seed(config.seed + 7919 * ctx.rank)
        model = wrap_model(model, ctx, device)
        core = model if ctx.strategy is Strategy.FSDP else model.module
    params = list(_trainable(model).values())
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(min(config.warmup_steps, config.max_steps // 2), config.max_steps))
    log.info("%s fine-tune on %s: %d trainable parameters, %d steps of %d examples",
             config.method, device, sum(p.numel() for p in params), config.max_steps, config.batch_size)

    meta = {"config_fingerprint": config.fingerprint(), "dataset_sha256": dataset_sha,
            "base_digest": content_digest(model_dir), "method": config.method}
    store = CheckpointStore(checkpoint_uri or out_dir / CHECKPOINT_DIR, cache=out_dir / CHECKPOINT_DIR)
    ckpt_root = store.root
    start, losses, resumed = 0, [], None
    latest = store.latest() if ctx.local_rank == 0 else None
    if ctx.enabled:
        from components.finetune.distributed import barrier

        barrier()  # node-local rank 0 has pulled the newest checkpoint
        latest = latest or (_checkpoints(ckpt_root) or [None])[-1]
    if latest is not None:
        start, losses = _load_checkpoint(latest, core, opt, sched, meta, ctx)
        resumed = start
        log.info("resuming from checkpoint %s (step %d)", latest, start)

    def save(at: int) -> None:
        rngs = None
        if ctx.enabled:
            from components.finetune.distributed import barrier, gather_objects

            rngs = gather_objects(torch.get_rng_state())
        if ctx.is_main:
            path = _save_checkpoint(ckpt_root, at, core, opt, sched, losses, meta, config.keep_checkpoints, rngs)
            store.publish(path, config.keep_checkpoints)
        if ctx.enabled:
            barrier()

    model.train()
    stopped_by = "max_steps"
    tokens = 0
    step = start
    t0 = clock()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    with _progress() as progress:
        task = progress.add_task("train", total=config.max_steps, completed=start, loss=losses[-1] if losses else float("nan"))
        while step < config.max_steps:
            over = config.time_budget_s is not None and clock() - t0 >= config.time_budget_s
            if ctx.enabled and config.time_budget_s is not None:  # every rank stops at the same step
                from components.finetune.distributed import all_sum

                over = bool(all_sum(torch.tensor([int(over)], device=device)).item())
            if over:
                stopped_by = "time_budget"
                log.info("time budget of %.0fs reached at step %d", config.time_budget_s, step)
                break
            if ctx.enabled:
                value, step_tokens = _distributed_step(model, data, step, config, pad_id, ctx, device, autocast)
            else:
                ids, mask, labels = (t.to(device) for t in _batch(data, step, config.seed, config.batch_size, pad_id))
                with autocast:
                    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                value, step_tokens = None, int(mask.sum())
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            value = float(loss.detach()) if value is None else value
            losses.append(value)
            tokens += step_tokens
            progress.update(task, completed=step, loss=value)
            if step % config.log_every == 0:
                recent = losses[-config.log_every :]
                log.info("step %d/%d loss %.4f lr %.2e", step, config.max_steps, sum(recent) / len(recent),
                         sched.get_last_lr()[0])
            if on_step is not None:
                on_step(step, value)
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.max_steps:
                save(step)
    wall = max(clock() - t0, 1e-9)
    if stopped_by == "time_budget" and config.checkpoint_every and step > start:
        save(step)
    if not losses:
        raise FinetuneError("no training step ran (time budget too small?)")

    if ctx.enabled:
        from components.finetune.distributed import barrier, full_state_dict

        state = full_state_dict(core) if ctx.strategy is Strategy.FSDP else None  # a collective: every rank joins
        if not ctx.is_main:
            barrier()
            return None
        if state is not None:  # rebuild an unsharded copy to save (FSDP's parameters are DTensor shards)
            core = _unsharded_copy(model_dir, config, state)
    model = core
    model.eval()
    model.to("cpu")
    staging = out_dir / ".model-staging"
    shutil.rmtree(staging, ignore_errors=True)
    adapter_dir = None
    if config.method == "lora":
        adapter_dir = out_dir / "adapter"
        shutil.rmtree(adapter_dir, ignore_errors=True)
        model.save_pretrained(adapter_dir)
        if config.merge_adapter:
            model.merge_and_unload().save_pretrained(staging)
        else:
            shutil.copytree(adapter_dir, staging)
    else:
        model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    write_manifest(staging, build_manifest(staging, source=f"finetune:{model_dir}", resolved_revision=meta["base_digest"]))
    final_dir = out_dir / "model"
    shutil.rmtree(final_dir, ignore_errors=True)
    os.replace(staging, final_dir)

    tail = losses[-10:]
    png, js = write_loss_curve(losses, out_dir, f"{config.method} fine-tune, {len(losses)} steps",
                               {"method": config.method, "learning_rate": config.learning_rate, "batch_size": config.batch_size})
    result = FinetuneResult(
        model_dir=final_dir, adapter_dir=adapter_dir, method=config.method, steps=step,
        final_loss=sum(tail) / len(tail), loss_curve_png=png, loss_curve_json=js,
        tokens_per_s=tokens / wall, wall_s=wall, resumed_from_step=resumed, stopped_by=stopped_by,
        dataset_sha256=dataset_sha, examples=len(data), device=device, world_size=ctx.world_size,
    )
    (out_dir / "finetune_result.json").write_text(json.dumps({**result.to_dict(), "config": config.to_dict()}, indent=2))
    log.info("fine-tune done: %d steps, final loss %.4f, %.0f tokens/s, %.1fs", step, result.final_loss, result.tokens_per_s, wall)
    if ctx.enabled:
        from components.finetune.distributed import barrier

        barrier()
    return result


def _distributed_step(model, data: TokenizedDataset, step: int, config: FinetuneConfig, pad_id: int,
                      ctx: DistContext, device: str, autocast) -> tuple[float, int]:
    """Forward/backward of this rank's slice; the gradient equals the full-batch mean loss's. Returns (loss, tokens)."""
    import torch

    from components.finetune.distributed import all_sum

    ids, mask, labels = (t.to(device) for t in _batch(data, step, config.seed, config.batch_size, pad_id,
                                                      ctx.rank, ctx.world_size))
    # answer tokens of the whole global batch (labels shifted by one, as the causal LM loss counts them)
    counts = all_sum(torch.stack([(labels[:, 1:] != IGNORE).sum(), mask.sum()]).to(device))
    with autocast:
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=counts[0]).loss
    (loss * ctx.world_size).backward()  # DDP/FSDP average gradients over ranks; undo the 1/W
    total = all_sum(loss.detach().clone())
    return float(total), int(counts[1])


def _unsharded_copy(model_dir: Path, config: FinetuneConfig, state: dict):
    """A plain (CPU) copy of the trained model from a gathered full state dict (FSDP)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_target_modules) if config.lora_target_modules else None,
            task_type="CAUSAL_LM",
        ))
    model.load_state_dict(state)
    return model
