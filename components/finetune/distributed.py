"""The fine-tune loop under ``torch.distributed``, started by ``torchrun`` (DDP, or FSDP for models one device cannot hold).

Every rank loads the model and dataset, and computes the same global batch for
step ``s`` from ``(seed, s)`` exactly as one process would; rank ``r`` of ``W``
takes the contiguous slice ``r`` of it (``batch_size`` must divide by ``W``).
The loss is the sum over this rank's answer tokens divided by the answer tokens
of the *whole* batch (all-reduced), scaled by ``W`` because DDP averages
gradients: the update is the one a single process makes on the full batch, so
``2 x half-batch`` and ``1 x full batch`` follow the same loss curve (to float
rounding, with dropout off; dropout masks are drawn per rank). Rank 0 writes the
checkpoints, the model, the loss curve and the result; the others wait.

Entry point (what a TrainJob's trainer runs)::

    torchrun --nproc-per-node 2 -m components.finetune.distributed \\
        --model MODEL --data TRAIN.jsonl --out OUT [--checkpoint URI] [--config-json JSON]

``MODEL``, ``TRAIN.jsonl``, ``OUT`` and ``URI`` are local/PVC paths or fsspec URLs
(``s3://``, ``gs://``); remote inputs are pulled to a node-local folder first and
the outputs pushed back. Kubeflow Trainer's torch plugin sets the ``PET_*``
variables torchrun reads (nodes, processes per node, node rank, master address).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from components.finetune.errors import FinetuneConfigError, FinetuneError

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.jsonl"  # under OUT: one JSON object per line, read by the TrainJob launcher
RESULT_FILE = "finetune_result.json"


class Strategy(str, Enum):
    """How the model is spread over the ranks."""

    DDP = "ddp"  # every rank holds the whole model; gradients all-reduced
    FSDP = "fsdp"  # parameters, gradients and optimizer state sharded over ranks (torch FSDP2 fully_shard)

    @classmethod
    def parse(cls, name: str) -> "Strategy":
        try:
            return cls(name)
        except ValueError:
            raise FinetuneConfigError(
                f"unknown distributed strategy {name!r}; use one of {', '.join(s.value for s in cls)}"
            ) from None


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (torchrun's environment)."""

    rank: int = 0  # global rank, 0 writes the outputs
    world_size: int = 1  # processes in the job (nodes x processes per node)
    local_rank: int = 0  # rank on this node (picks the GPU)
    strategy: Strategy = Strategy.DDP

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, environ: dict[str, str], strategy: Strategy = Strategy.DDP) -> "DistContext":
        """Read torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (absent: one process)."""
        return cls(rank=int(environ.get("RANK", 0)), world_size=int(environ.get("WORLD_SIZE", 1)),
                   local_rank=int(environ.get("LOCAL_RANK", 0)), strategy=strategy)

    def validate(self, batch_size: int) -> "DistContext":
        if not (0 <= self.rank < self.world_size):
            raise FinetuneConfigError(f"rank {self.rank} outside world size {self.world_size}")
        if batch_size % self.world_size:
            raise FinetuneConfigError(
                f"FinetuneConfig.batch_size={batch_size} does not divide over {self.world_size} processes; "
                f"use a multiple of {self.world_size}"
            )
        return self


def init_process_group(ctx: DistContext, device: str) -> None:
    """Join the process group (gloo on CPU, nccl on GPU); a no-op for one process."""
    if not ctx.enabled:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        torch.cuda.set_device(ctx.local_rank)


def wrap_model(model, ctx: DistContext, device: str):
    """DDP or FSDP2 around ``model`` (already on its device); the model itself for one process."""
    if not ctx.enabled:
        return model
    if ctx.strategy is Strategy.FSDP:
        from torch.distributed.fsdp import fully_shard

        blocks = set(getattr(model, "_no_split_modules", None) or ())
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        blocks |= set(getattr(base, "_no_split_modules", None) or ())
        for module in model.modules():
            if type(module).__name__ in blocks:
                fully_shard(module)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[ctx.local_rank] if device == "cuda" else None)


def unwrap(model):
    """The model under a DDP wrapper (FSDP2 shards in place, so nothing to unwrap)."""
    return getattr(model, "module", model)


def all_sum(tensor):
    """Sum ``tensor`` over all ranks in place (no-op without a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (a one-item list without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def full_state_dict(model) -> dict:
    """The whole (unsharded) state dict on every rank, on the CPU (FSDP gathers; DDP/one process copy)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


class ProgressLog:
    """Rank 0's progress events (``progress.jsonl`` under the output location), for the TrainJob launcher to stream.

    Args:
        local_file: where events are appended.
        remote_uri: for a remote output location, the object the file is copied to every ``flush_every`` events.
    """

    def __init__(self, local_file: Path, remote_uri: str | None = None, flush_every: int = 1) -> None:
        self.local_file = local_file
        self.remote_uri = remote_uri
        self.flush_every = flush_every
        self._pending = 0
        local_file.parent.mkdir(parents=True, exist_ok=True)

    def event(self, kind: str, **fields) -> None:
        with self.local_file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": kind, "time": round(time.time(), 3), **fields}) + "\n")
        if kind == "log":  # log lines travel with the next progress event (one upload per step, not per line)
            return
        self._pending += 1
        if self.remote_uri and (self._pending >= self.flush_every or kind in ("done", "error")):
            self.flush()


class ProgressLogHandler(logging.Handler):
    """Rank 0's log records (INFO and up) as ``log`` events in ``progress.jsonl``.

    The KFP step prints them as they come, so the step's log shows the trainer's own
    lines (dataset, parameters, steps, checkpoints, warnings) without reading pod logs
    (which would need ``pods/log`` RBAC for the pipeline account and a pod-serving API).
    """

    def __init__(self, progress: ProgressLog) -> None:
        super().__init__(logging.INFO)
        self.progress = progress
        self._busy = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._busy:  # a record logged while writing one (the storage layer's own logging)
            return
        self._busy = True
        try:
            self.progress.event("log", level=record.levelname, logger=record.name, message=record.getMessage()[:2000])
        except Exception:  # never let progress reporting break training
            self.handleError(record)
        finally:
            self._busy = False

    def flush(self) -> None:
        if self.remote_uri:
            from components.finetune.storage import filesystem

            fs, path = filesystem(self.remote_uri)
            fs.put_file(str(self.local_file), path)
        self._pending = 0


def _stage_in(uri: str, dest: Path, is_file: bool) -> Path:
    from components.finetune.storage import download_dir, filesystem, is_remote, local_path

    if not is_remote(uri):
        return local_path(uri)
    if is_file:
        fs, path = filesystem(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(path, str(dest))
        return dest
    return download_dir(uri, dest)


def run(model: str, data: str, out: str, config, ctx: DistContext, checkpoint: str = "", workdir: Path | None = None):
    """Run the loop as one rank of a torchrun job; return the :class:`FinetuneResult` (rank 0) or None.

    Args:
        model: model folder or fsspec URL of one.
        data: training JSONL, path or URL.
        out: output location (path or URL): ``model/``, loss curve, ``finetune_result.json``, ``progress.jsonl``.
        config: the :class:`FinetuneConfig`.
        ctx: this rank's :class:`DistContext`.
        checkpoint: checkpoint location (path or URL); empty keeps checkpoints under ``out``.
        workdir: node-local scratch folder (shared by the ranks of one node).
    """
    from components.finetune.storage import is_remote, local_path, upload_dir
    from components.finetune.trainer import finetune

    workdir = workdir or Path(tempfile.gettempdir()) / f"llmops-finetune-{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}"
    workdir.mkdir(parents=True, exist_ok=True)
    import torch

    init_process_group(ctx, "cuda" if torch.cuda.is_available() else "cpu")
    remote_out = is_remote(out)
    out_dir = workdir / "out" if remote_out else local_path(out)
    progress = None
    if ctx.is_main:
        local_progress = out_dir / PROGRESS_FILE
        if local_progress.exists():
            local_progress.unlink()
        progress = ProgressLog(local_progress, f"{out.rstrip('/')}/{PROGRESS_FILE}" if remote_out else None,
                               flush_every=1)
        progress.event("start", world_size=ctx.world_size, strategy=ctx.strategy.value, max_steps=config.max_steps)
    handler = ProgressLogHandler(progress) if progress is not None else None
    if handler is not None:
        logging.getLogger().addHandler(handler)
    try:
        if ctx.local_rank == 0:
            model_dir = _stage_in(model, workdir / "model", is_file=False)
            train_file = _stage_in(data, workdir / "train.jsonl", is_file=True)
        barrier()
        if ctx.local_rank != 0:
            model_dir = local_path(model) if not is_remote(model) else workdir / "model"
            train_file = local_path(data) if not is_remote(data) else workdir / "train.jsonl"

        def on_step(step: int, loss: float) -> None:
            if progress is not None and (step % config.log_every == 0 or step == config.max_steps):
                progress.event("step", step=step, loss=round(loss, 5), max_steps=config.max_steps)

        result = finetune(model_dir, train_file, out_dir, config, on_step=on_step,
                          checkpoint_uri=checkpoint or None, dist=ctx)
    except Exception as exc:
        if progress is not None:
            progress.event("error", error=type(exc).__name__, message=str(exc)[:2000])
        raise
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
    if ctx.is_main and result is not None:
        if remote_out:
            for name in ("model", "adapter"):
                if (out_dir / name).exists():
                    upload_dir(out_dir / name, f"{out.rstrip('/')}/{name}")
            from components.finetune.storage import filesystem

            fs, root = filesystem(out)
            for name in ("loss_curve.png", "loss_curve.json", RESULT_FILE):
                fs.put_file(str(out_dir / name), f"{root.rstrip('/')}/{name}")
        progress.event("done", steps=result.steps, final_loss=result.final_loss, tokens_per_s=result.tokens_per_s)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m components.finetune.distributed`` under torchrun; exit 1 with a one-line error on failure."""
    p = argparse.ArgumentParser(prog="python -m components.finetune.distributed", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model folder or s3:// / gs:// URL")
    p.add_argument("--data", required=True, help="training JSONL, path or URL")
    p.add_argument("--out", required=True, help="output location, path or URL")
    p.add_argument("--checkpoint", default="", help="checkpoint location (PVC path or URL); default OUT/checkpoints")
    p.add_argument("--config-json", default="{}", help="FinetuneConfig fields as JSON")
    p.add_argument("--strategy", default="ddp", help="ddp (default) or fsdp")
    p.add_argument("--workdir", type=Path, default=None, help="node-local scratch folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank" + os.environ.get("RANK", "0") + " %(levelname)s %(message)s")

    from components.finetune.config import FinetuneConfig

    try:
        config = FinetuneConfig.from_dict(json.loads(args.config_json or "{}"))
        ctx = DistContext.from_env(dict(os.environ), Strategy.parse(args.strategy))
        run(args.model, args.data, args.out, config, ctx, checkpoint=args.checkpoint, workdir=args.workdir)
    except (FinetuneError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
