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
    check_config_json(config)
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
    check_weights(root)
    return root.resolve()


SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def check_safetensors_file(path: str | Path) -> None:
    """Refuse a ``*.safetensors`` file that is corrupt or truncated, from its header alone.

    Checks the 8-byte header length, that the header is a JSON object of
    tensors, and that every tensor's ``data_offsets`` lies inside the file and
    the data ends exactly at the end of the file (a cut-off download fails here).

    Raises:
        InvalidModelFolder: the file is not a complete safetensors file.
    """
    path = Path(path)
    fix = "re-download or re-save it with save_pretrained(safe_serialization=True)"
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise InvalidModelFolder(f"{path} is not a safetensors file ({size} bytes, no header); {fix}")
            length = int.from_bytes(raw, "little")
            if length <= 1 or length > SAFETENSORS_MAX_HEADER or 8 + length > size:
                raise InvalidModelFolder(
                    f"{path} is corrupt or truncated (header of {length} bytes in a {size}-byte file); {fix}"
                )
            header_bytes = fh.read(length)
    except OSError as exc:
        raise InvalidModelFolder(f"cannot read {path} ({exc.strerror}); check the file and its permissions") from exc
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidModelFolder(f"{path} is corrupt (its header is not JSON); {fix}") from None
    if not isinstance(header, dict):
        raise InvalidModelFolder(f"{path} is corrupt (its header is not a JSON object); {fix}")
    data_size, end = size - 8 - length, 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise InvalidModelFolder(f"{path} is corrupt (tensor {key!r} has no data_offsets); {fix}")
        begin, stop = offsets
        if not 0 <= begin <= stop <= data_size:
            raise InvalidModelFolder(
                f"{path} is truncated: tensor {key!r} needs bytes {begin}..{stop} of {data_size}; {fix}"
            )
        end = max(end, stop)
    if end != data_size:
        raise InvalidModelFolder(f"{path} is corrupt: tensor data ends at {end}, the file holds {data_size} bytes; {fix}")


def check_config_json(config: str | Path) -> dict:
    """``config.json`` as a dict, or :class:`InvalidModelFolder` naming the file and the fix."""
    config = Path(config)
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidModelFolder(f"{config} is not valid JSON ({exc}); re-save the model with save_pretrained()") from exc
    if not isinstance(data, dict):
        raise InvalidModelFolder(f"{config} must be a JSON object, not {type(data).__name__}; re-save the model with save_pretrained()")
    return data


def check_weights(model_dir: str | Path) -> None:
    """Every ``*.safetensors`` file under ``model_dir`` passes :func:`check_safetensors_file`."""
    for path in sorted(Path(model_dir).rglob("*.safetensors")):
        check_safetensors_file(path)
