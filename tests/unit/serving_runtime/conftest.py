"""Fixtures: the tiny model loaded once, and a running GenerationEngine over it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def hf(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # One intra-op thread: on a shared machine more threads spin against each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    yield model, tok
    torch.set_num_threads(threads)
