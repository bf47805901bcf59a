import json

import pytest

from components.bootstrap import dataset
from components.bootstrap.tiny import build_tiny_model


def test_splits_are_disjoint_and_deterministic():
    train = dataset.generate("train", 500, seed=1)
    evals = dataset.generate("eval", 100, seed=1)
    assert {e.prompt for e in train}.isdisjoint({e.prompt for e in evals})
    assert dataset.generate("eval", 100, seed=1) == evals


def test_answers_follow_the_task_rule():
    for ex in dataset.generate("test", 200):
        q = ex.prompt.removeprefix("Q: ").removesuffix("\nA:").split()
        if q[0] == "convert":
            factor = {(s, d): f for s, d, f in dataset.CONVERSIONS}[(q[2], q[4])]
            assert ex.completion == f" {int(q[1]) * factor}"
        else:
            assert ex.completion == " " + q[1].upper()


def test_jsonl_forms(tmp_path):
    exs = dataset.generate("eval", 3)
    p = dataset.write_jsonl(exs, tmp_path / "a.jsonl", chat=True)
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    assert rows[0]["messages"][0]["role"] == "user"
    assert rows[0]["messages"][1]["content"] == exs[0].completion


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        dataset.generate("dev", 3)


def test_tiny_model_is_a_safetensors_hf_folder(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    names = {p.name for p in tiny_model.iterdir()}
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert 2_000_000 < model.num_parameters() < 6_000_000
    assert tok.decode(tok("Q: convert 5 km to m\nA:").input_ids) == "Q: convert 5 km to m\nA:"
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert chat == "Q: hi\nA:"


def test_unknown_preset_lists_known(tmp_path):
    with pytest.raises(ValueError, match="known: micro, tiny"):
        build_tiny_model(tmp_path / "x", "huge")


def test_bootstrap_is_reproducible(tmp_path, tiny_model):
    from safetensors.torch import load_file

    again = build_tiny_model(tmp_path / "again", "tiny")
    a, b = load_file(tiny_model / "model.safetensors"), load_file(again / "model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
    assert (tiny_model / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()
