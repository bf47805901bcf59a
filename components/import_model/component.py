"""KFP component of the import step: calls :func:`components.import_model.import_model` and nothing else."""

from kfp import dsl
from kfp.dsl import Model, Output

from components.images import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def import_model(
    source: str,
    model: Output[Model],
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    mlflow_tracking_uri: str = "",
) -> str:
    """Import ``source`` (path, hf://, s3://, gs://, models:/, bootstrap://) into the Model artifact; returns its content digest."""
    from components.import_model import import_model as run_import

    manifest = run_import(
        source,
        model.path,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        mlflow_tracking_uri=mlflow_tracking_uri or None,
    )
    model.metadata.update({
        "source": manifest.source,
        "resolved_revision": manifest.resolved_revision or "",
        "content_digest": manifest.content_digest,
        "architecture": manifest.architecture or "",
        "parameter_count": manifest.parameter_count,
        "total_size_bytes": manifest.total_size_bytes,
    })
    return manifest.content_digest
