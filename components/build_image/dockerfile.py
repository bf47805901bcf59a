"""The Dockerfile equivalent of a :class:`BuildSpec` (for the ``docker`` and ``kaniko`` builders)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from components.build_image.image import BaseImage, default_labels, scratch_base
from components.build_image.layers import scan_folder
from components.build_image.spec import NONROOT_USER, BuildSpec


def render_dockerfile(spec: BuildSpec, context_subdir: str = ".", model_digest: str | None = None) -> str:
    """Dockerfile text: ``FROM base``, ``COPY`` the folder to the target path, labels, env, user.

    Args:
        spec: the build.
        context_subdir: the folder's path inside the build context.
        model_digest: recorded as ``io.llmops.model.digest`` when known.
    """
    base: BaseImage = scratch_base(spec.platform)
    lines = [f"FROM {'scratch' if spec.base_is_scratch else spec.base}"]
    dest = spec.resolved_target_path.rstrip("/") + "/"
    lines.append(f"COPY --chown=0:0 {context_subdir.rstrip('/')}/ {dest}")
    labels = {**default_labels(spec, base, model_digest), **spec.labels}
    if not spec.base_is_scratch:
        labels["org.opencontainers.image.base.name"] = spec.base or ""
        labels.pop("org.opencontainers.image.base.digest", None)
    for key, value in labels.items():
        lines.append(f"LABEL {json.dumps(key)}={json.dumps(value)}")
    for key, value in spec.env.items():
        lines.append(f"ENV {key}={json.dumps(value)}")
    lines.append(f"USER {spec.user or NONROOT_USER}")
    if spec.entrypoint is not None:
        lines.append(f"ENTRYPOINT {json.dumps(list(spec.entrypoint))}")
    if spec.cmd is not None:
        lines.append(f"CMD {json.dumps(list(spec.cmd))}")
    return "\n".join(lines) + "\n"


def write_build_context(spec: BuildSpec, out_dir: Path) -> Path:
    """A build context folder: ``Dockerfile`` plus ``model/`` (hard links where possible, else copies).

    Raises:
        ModelFolderError: the source folder is missing or empty.
    """
    entries = scan_folder(spec.source_dir)
    out_dir = Path(out_dir)
    model = out_dir / "model"
    model.mkdir(parents=True, exist_ok=True)
    model.chmod(0o755)
    for entry in entries:
        dst = model / entry.rel
        if entry.is_dir:
            dst.mkdir(parents=True, exist_ok=True)
            dst.chmod(0o755)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o755 if entry.executable else 0o644  # same modes as the oci builder's layers
        src = entry.source.resolve()
        try:
            if src.stat().st_mode & 0o777 != mode:
                raise OSError("mode differs: copy instead of linking, never chmod the user's file")
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
            dst.chmod(mode)
    (out_dir / "Dockerfile").write_text(render_dockerfile(spec, "model"))
    return out_dir
