"""Run ``components.finetune.distributed`` under torchrun from tests (one machine, ``--standalone``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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
