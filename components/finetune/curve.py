"""Loss curve outputs: JSON (for machines) and PNG (for people, in the Kubeflow UI)."""

from __future__ import annotations

import json
from pathlib import Path


def moving_average(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def write_loss_curve(losses: list[float], out_dir: Path, title: str, extra: dict | None = None) -> tuple[Path, Path]:
    """Write ``loss_curve.json`` and ``loss_curve.png`` into ``out_dir``; return both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    window = max(1, min(25, len(losses) // 10 or 1))
    smooth = moving_average(losses, window)
    js = out_dir / "loss_curve.json"
    js.write_text(json.dumps({"step": list(range(1, len(losses) + 1)), "loss": losses, "smoothed": smooth,
                              "smoothing_window": window, **(extra or {})}, indent=1))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = range(1, len(losses) + 1)
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss")
    ax.plot(steps, smooth, color="tab:blue", linewidth=1.8, label=f"moving average ({window})")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = out_dir / "loss_curve.png"
    fig.savefig(png)
    plt.close(fig)
    return png, js
