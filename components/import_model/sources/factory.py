"""Pick the model source for a URI; unknown schemes are refused with the known list."""

from __future__ import annotations

from components.import_model.errors import UnknownSourceError
from components.import_model.sources.base import ModelSource, Scheme

KNOWN_FORMS = (
    "a local folder or .tar/.tar.gz/.zip archive (or file://...)",
    "hf://org/name[@revision]",
    "s3://bucket/prefix",
    "gs://bucket/prefix",
    "models:/name/version or models:/name@alias",
    "bootstrap://tiny or bootstrap://micro",
)


def scheme_of(uri: str) -> Scheme:
    """The scheme of ``uri``; plain paths are :attr:`Scheme.LOCAL`.

    Raises:
        UnknownSourceError: a ``scheme://`` (or ``scheme:/``) prefix that no source handles.
    """
    if uri.startswith("models:/"):
        return Scheme.MODELS
    if "://" not in uri:
        return Scheme.LOCAL
    prefix = uri.split("://", 1)[0].lower()
    aliases = {"gcs": Scheme.GS}
    try:
        return aliases.get(prefix) or Scheme(prefix)
    except ValueError:
        raise UnknownSourceError(
            f"unknown model source scheme {prefix + '://'!r} in {uri!r}; known sources: " + "; ".join(KNOWN_FORMS)
        ) from None


def source_for(uri: str) -> ModelSource:
    """Return the source that can fetch ``uri`` (heavy SDKs are imported lazily by each source)."""
    scheme = scheme_of(uri)
    if scheme is Scheme.LOCAL:
        from components.import_model.sources.local import LocalSource

        return LocalSource()
    if scheme is Scheme.HF:
        from components.import_model.sources.huggingface import HuggingFaceSource

        return HuggingFaceSource()
    if scheme in (Scheme.S3, Scheme.GS):
        from components.import_model.sources.remote_fs import RemoteFsSource

        return RemoteFsSource(scheme.value, scheme)
    if scheme is Scheme.MODELS:
        from components.import_model.sources.mlflow_registry import MlflowRegistrySource

        return MlflowRegistrySource()
    from components.import_model.sources.bootstrap import BootstrapSource

    return BootstrapSource()
