"""Checks that a folder is a safe, loadable Hugging Face model folder before it is registered."""

from __future__ import annotations

import json
from pathlib import Path

from model_registry.errors import InvalidModelFolder

# Weight formats that unpickle on load: refused, the registry stores safetensors only.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"})


def validate_model_folder(model_dir: str | Path) -> Path:
    """Refuse a folder that is not a safetensors Hugging Face model folder.

    Args:
        model_dir: the folder to check.

    Returns:
        The folder as a resolved :class:`~pathlib.Path`.

    Raises:
        InvalidModelFolder: missing folder, missing or unreadable ``config.json``,
            no ``*.safetensors`` weights, or pickle-format files present.
    """
    root = Path(model_dir).expanduser()
    if not root.is_dir():
        raise InvalidModelFolder(f"model folder {root} does not exist or is not a folder; pass the folder that holds config.json")
    config = root / "config.json"
    if not config.is_file():
        raise InvalidModelFolder(
            f"model folder {root} has no config.json; save the model with save_pretrained() into that folder"
        )
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidModelFolder(f"{config} is not valid JSON ({exc}); re-save the model with save_pretrained()") from exc
    files = [p for p in root.rglob("*") if p.is_file()]
    pickles = sorted(p.relative_to(root).as_posix() for p in files if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise InvalidModelFolder(
            f"model folder {root} holds pickle-format files {pickles}; the registry stores safetensors only: "
            "re-save with save_pretrained(safe_serialization=True) and remove the pickle files"
        )
    if not any(p.suffix == ".safetensors" for p in files):
        raise InvalidModelFolder(
            f"model folder {root} has no *.safetensors weights; save with save_pretrained(safe_serialization=True)"
        )
    return root.resolve()
