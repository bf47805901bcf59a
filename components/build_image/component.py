"""KFP components of the image step: thin wrappers around :func:`build_image` and the kaniko renderer."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components.images import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def build_image_op(
    model: Input[Model],
    metrics: Output[Metrics],
    target: str,
    base: str = "",
    mode: str = "modelcar",
    builder: str = "oci",
    tag: str = "",
    insecure: bool = False,
    model_name: str = "",
    model_version: str = "",
    source_revision: str = "",
    tracking_uri: str = "",
) -> str:
    """Package the model as an OCI image, push it, and record ``llmops.image_ref`` on the MLflow version.

    Registry credentials come from the Docker config (``DOCKER_CONFIG``, e.g. a mounted secret).
    Returns the pinned reference ``repo@sha256:...``.
    """
    from components.build_image import build_image
    from components.tracking import step_tracking_uri

    if model_name and model_version:
        tracking_uri = step_tracking_uri(tracking_uri) or ""  # fail before pushing, not after
    result = build_image(
        model.path, target, mode=mode, base=base or None, builder=builder, insecure=insecure, tag=tag or None,
        model_name=model_name or None, model_version=model_version or None, source_revision=source_revision or None,
    )
    if model_name and model_version:
        from components.build_image.lineage import record_image

        record_image(result, model_name, model_version, tracking_uri or None)
    metrics.log_metric("image_size_bytes", float(sum(layer.size for layer in result.layers)))
    metrics.log_metric("bytes_uploaded", float(result.bytes_uploaded))
    import json
    from pathlib import Path

    Path(metrics.path).write_text(json.dumps(metrics.metadata))
    return result.reference


@dsl.component(**COMPONENT_OPTIONS)
def kaniko_context_op(
    model: Input[Model], target: str, context: Output[Artifact], base: str = "", mode: str = "modelcar",
    model_name: str = "", model_version: str = "",
):
    """Write a kaniko build context (``Dockerfile`` + ``model/``) for the cluster path."""
    from pathlib import Path

    from components.build_image.dockerfile import write_build_context
    from components.build_image.spec import BuildSpec, Mode

    spec = BuildSpec(source_dir=Path(model.path), target=target, mode=Mode(mode), base=base or None,
                     model_name=model_name or None, model_version=model_version or None)
    write_build_context(spec, Path(context.path))


def kaniko_build_op(insecure: bool = False):
    """The kaniko executor step (container component), executor pinned by digest."""
    from components.build_image.builders.kaniko import kaniko_component

    return kaniko_component(insecure=insecure)
