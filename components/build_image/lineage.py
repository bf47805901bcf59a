"""Record a built image on its MLflow model version (``llmops.image_ref`` and friends)."""

from __future__ import annotations

from components.build_image.spec import BuildResult


def record_image(result: BuildResult, name: str, version: str | int, tracking_uri: str | None = None) -> dict[str, str]:
    """Tag the registered model version with the pushed image.

    Writes ``llmops.image_ref`` (``repo@sha256:...``), ``llmops.image_digest`` and
    ``llmops.image_model_digest`` through ``model_registry``'s ``add_lineage``.

    Returns:
        The tags written.

    Raises:
        model_registry errors: unknown model/version, tracking server down.
    """
    try:
        from model_registry import add_lineage
    except ImportError:
        from model_registry.registration import add_lineage

    return add_lineage(
        name, version, tracking_uri,
        image_ref=result.reference, image_digest=result.digest, image_model_digest=result.model_digest,
    )
