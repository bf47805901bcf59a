"""Fixtures for the distributed fine-tune tests: a dropout-free micro model, a small dataset, a torchrun helper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread for in-process runs (the machine's cores are shared)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def still_model(micro_model, tmp_path_factory) -> Path:
    """The micro bootstrap model with dropout off: ranks draw dropout masks from their own streams, so only a
    dropout-free model can show that 2 x half-batch and 1 x full batch take the same steps."""
    import shutil

    dst = tmp_path_factory.mktemp("still") / "micro"
    shutil.copytree(micro_model, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> dict[str, Path]:
    from components.bootstrap.dataset import write_task_dataset

    return write_task_dataset(tmp_path_factory.mktemp("small-data"), train=240, eval=12, test=4)


def torchrun_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def torchrun_cmd(nproc: int, model: Path, data: Path, out: Path, config: dict, checkpoint: str = "",
                 strategy: str = "ddp") -> list[str]:
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", str(nproc),
           "-m", "components.finetune.distributed", "--model", str(model), "--data", str(data), "--out", str(out),
           "--config-json", json.dumps(config), "--strategy", strategy]
    return cmd + (["--checkpoint", checkpoint] if checkpoint else [])


def torchrun(nproc: int, model: Path, data: Path, out: Path, config: dict, **kw) -> dict:
    """Run a torchrun job to the end; return its finetune_result.json."""
    proc = subprocess.run(torchrun_cmd(nproc, model, data, out, config, **kw), cwd=REPO, env=torchrun_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "finetune_result.json").read_text())
