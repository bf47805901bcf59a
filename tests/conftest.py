"""Shared fixtures: the generated bootstrap model and task data, built once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A fresh ``bootstrap://tiny`` model folder (random weights, ~3.3M parameters)."""
    from components.bootstrap.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("bootstrap") / "tiny", "tiny")


@pytest.fixture(scope="session")
def micro_model(tmp_path_factory) -> Path:
    """An even smaller bootstrap model for tests that only need the plumbing."""
    from components.bootstrap.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("bootstrap") / "micro", "micro")


@pytest.fixture(scope="session")
def task_data(tmp_path_factory) -> dict[str, Path]:
    """Generated task dataset: ``train``/``eval``/``test`` JSONL paths."""
    from components.bootstrap.dataset import write_task_dataset

    return write_task_dataset(tmp_path_factory.mktemp("data"), train=2000, eval=100, test=100)


@pytest.fixture
def model_copy(tiny_model, tmp_path) -> Path:
    """A private copy of the tiny model a test may modify."""
    dst = tmp_path / "model"
    shutil.copytree(tiny_model, dst)
    return dst
