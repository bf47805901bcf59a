"""The ``bootstrap://tiny`` model: a byte-level BPE tokenizer and a small random GPT-2.

Built from a seed with no network: the tokenizer is trained with ``tokenizers``
on generated task text, the model is a ``GPT2LMHeadModel`` with random weights.
The folder is a normal Hugging Face model folder (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``) that any
``AutoModelForCausalLM.from_pretrained`` call loads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from components.bootstrap.dataset import tokenizer_corpus

EOS = "<|endoftext|>"
PAD = "<|pad|>"
# A minimal chat template: fine-tuning on chat data and serving chat requests
# both go through tokenizer.apply_chat_template with it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}Q: {{ message['content'] }}\nA:"
    "{% elif message['role'] == 'assistant' %} {{ message['content'] }}" + EOS + "\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Size of the generated model; the defaults give about 3.5M parameters."""

    vocab_size: int = 512  # BPE vocabulary size, special tokens included
    n_positions: int = 128  # longest sequence the model accepts
    n_embd: int = 256  # hidden size
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads
    seed: int = 0  # seeds both the tokenizer corpus and the weights

    def key(self) -> str:
        return "v1-" + "-".join(f"{v}" for v in asdict(self).values())


PRESETS: dict[str, TinySpec] = {
    "tiny": TinySpec(),
    "micro": TinySpec(n_embd=64, n_layer=2, n_head=2, n_positions=64),
}


def _train_tokenizer(spec: TinySpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(spec.seed), trainer=trainer)
    return tok


def build_tiny_model(out_dir: str | Path, preset: str = "tiny") -> Path:
    """Write the bootstrap model folder to ``out_dir`` (replaced atomically).

    Args:
        out_dir: destination folder; created, or replaced if it exists.
        preset: a name from :data:`PRESETS`.

    Returns:
        The folder path.

    Raises:
        ValueError: unknown preset (the message lists the known ones).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown bootstrap preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    spec = PRESETS[preset]

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bootstrap-", dir=out_dir.parent))
    try:
        hf_tok = PreTrainedTokenizerFast(
            tokenizer_object=_train_tokenizer(spec),
            eos_token=EOS,
            bos_token=EOS,
            pad_token=PAD,
            unk_token=None,
            model_max_length=spec.n_positions,
        )
        hf_tok.chat_template = CHAT_TEMPLATE
        config = GPT2Config(
            vocab_size=len(hf_tok),
            n_positions=spec.n_positions,
            n_embd=spec.n_embd,
            n_layer=spec.n_layer,
            n_head=spec.n_head,
            bos_token_id=hf_tok.eos_token_id,
            eos_token_id=hf_tok.eos_token_id,
            pad_token_id=hf_tok.pad_token_id,
        )
        torch.manual_seed(spec.seed)
        model = GPT2LMHeadModel(config)
        model.generation_config.pad_token_id = hf_tok.pad_token_id
        model.save_pretrained(staging, safe_serialization=True)
        hf_tok.save_pretrained(staging)
        (staging / "bootstrap.json").write_text(
            json.dumps({"preset": preset, "spec": asdict(spec), "key": spec.key()}, indent=2)
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def cache_root() -> Path:
    """Where generated bootstrap models are kept (``LLMOPS_CACHE`` or ``~/.cache/llmops``)."""
    return Path(os.environ.get("LLMOPS_CACHE", Path.home() / ".cache" / "llmops"))


def ensure_tiny_model(preset: str = "tiny") -> Path:
    """Return the cached bootstrap model folder for ``preset``, building it once."""
    if preset not in PRESETS:
        raise ValueError(f"unknown bootstrap preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    folder = cache_root() / "bootstrap" / f"{preset}-{PRESETS[preset].key()}"
    if not (folder / "model.safetensors").exists():
        build_tiny_model(folder, preset)
    return folder
