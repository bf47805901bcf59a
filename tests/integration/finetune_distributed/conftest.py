"""Fixtures for the distributed fine-tune tests: a dropout-free micro model and a small dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


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
