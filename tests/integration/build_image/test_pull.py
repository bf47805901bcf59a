"""Pull a modelcar back out of a real registry and out of an OCI layout."""

import hashlib
from pathlib import Path

import pytest

from components.build_image import build_image
from oci_images.errors import ImageBuildError
from oci_images.pull import pull_model
from tests.support.oci_registry import registry_available, run_registry

pytestmark = pytest.mark.integration


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".complete"
    }


def test_pull_from_registry_matches_folder(micro_model, tmp_path):
    if why := registry_available():
        pytest.skip(why)
    with run_registry(tmp_path / "reg") as reg:
        result = build_image(micro_model, f"{reg.host}/models/micro", mode="modelcar", base=None, insecure=True)
        out = pull_model("oci://" + result.reference, tmp_path / "cache", insecure=True)
        assert _hashes(out) == _hashes(micro_model)
        # cached: a second pull returns the same folder without the registry
        reg.stop()
        assert pull_model("oci://" + result.reference, tmp_path / "cache", insecure=True) == out


def test_pull_from_layout(micro_model, tmp_path):
    result = build_image(micro_model, f"oci-layout:{tmp_path / 'layout'}", mode="modelcar", base=None)
    out = pull_model(result.reference, tmp_path / "cache")
    assert _hashes(out) == _hashes(micro_model)


def test_serving_image_path_is_not_a_modelcar(micro_model, tmp_path):
    result = build_image(micro_model, f"oci-layout:{tmp_path / 'layout'}", mode="modelcar", base=None)
    with pytest.raises(ImageBuildError, match="holds no files under /opt/none; is it a modelcar"):
        pull_model(result.reference, tmp_path / "cache", source_path="/opt/none")
