"""Kaniko builder: builds inside a cluster pod with Google's kaniko executor.

Nothing runs kaniko on this machine, so this builder *renders*: the executor
arguments for a pod (:func:`kaniko_args`) and a Kubeflow Pipelines container
component (:func:`kaniko_component`) that a pipeline runs after a step that
writes the build context (``Dockerfile`` + ``model/``, see
:func:`components.build_image.dockerfile.write_build_context`). Calling
:meth:`KanikoBuilder.build` here raises :class:`BuilderUnavailable` with the fix.
"""


from components.build_image.builders.base import EventSink, ImageBuilder
from oci_images.errors import BuilderUnavailable, ImageBuildError
from oci_images.reference import ImageRef, parse_target
from components.build_image.spec import BuildResult, BuildSpec

# kaniko v1.23.2, multi-arch index digest (as pinned by public build scripts; refresh with
# `skopeo inspect --raw docker://gcr.io/kaniko-project/executor:v1.23.2 | sha256sum`).
KANIKO_EXECUTOR = (
    "gcr.io/kaniko-project/executor:v1.23.2"
    "@sha256:9e69fd4330ec887829c780f5126dd80edc663df6def362cd22e79bcdf00ac53f"
)


def require_digest_pinned(image: str) -> str:
    """Return ``image`` when it is pinned by ``@sha256:``; raise otherwise."""
    if "@sha256:" not in image:
        raise ImageBuildError(f"executor image {image!r} must be pinned by digest ('...@sha256:<64 hex>')")
    return image


def kaniko_args(spec: BuildSpec, context_dir: str, digest_file: str) -> list[str]:
    """Executor arguments for ``spec`` with its build context at ``context_dir``.

    Args:
        spec: the build (target must be a registry reference).
        context_dir: folder in the pod holding ``Dockerfile`` and ``model/``.
        digest_file: where kaniko writes the pushed manifest digest.
    """
    try:
        spec.validate()
    except ValueError as exc:
        raise ImageBuildError(f"invalid build request: {exc}") from exc
    target = parse_target(spec.target)
    if not isinstance(target, ImageRef):
        raise ImageBuildError("kaniko pushes to registries only; use --builder oci for oci-layout: targets")
    tag = spec.tag or target.tag or "latest"
    args = [
        f"--context=dir://{context_dir}",
        f"--dockerfile={context_dir.rstrip('/')}/Dockerfile",
        f"--destination={target.name}:{tag}",
        f"--digest-file={digest_file}",
        f"--custom-platform={spec.platform}",
        "--reproducible",
        "--single-snapshot",
        "--cleanup",
    ]
    if spec.insecure:
        args += ["--insecure", "--skip-tls-verify"]
        if not spec.base_is_scratch:
            args += ["--insecure-pull"]
    return args


def kaniko_pod_container(spec: BuildSpec, context_dir: str, digest_file: str = "/dev/termination-log",
                         executor_image: str = KANIKO_EXECUTOR) -> dict:
    """A Kubernetes container dict running the executor (credentials: mount a Docker config at /kaniko/.docker)."""
    return {
        "name": "kaniko",
        "image": require_digest_pinned(executor_image),
        "args": kaniko_args(spec, context_dir, digest_file),
        "env": [{"name": "DOCKER_CONFIG", "value": "/kaniko/.docker"}],
    }


def kaniko_component(executor_image: str = KANIKO_EXECUTOR, *, insecure: bool = False):
    """A KFP container component ``kaniko_build(context, destination) -> digest``.

    ``context`` is an artifact folder with ``Dockerfile`` and ``model/``; the
    output ``digest`` holds the pushed manifest digest.
    """
    from kfp import dsl

    image = require_digest_pinned(executor_image)
    extra = ["--insecure", "--skip-tls-verify", "--insecure-pull"] if insecure else []

    @dsl.container_component
    def kaniko_build(context: dsl.Input[dsl.Artifact], destination: str, digest: dsl.OutputPath(str)):
        return dsl.ContainerSpec(
            image=image,
            command=["/kaniko/executor"],
            args=[
                dsl.ConcatPlaceholder(["--context=dir://", context.path]),
                dsl.ConcatPlaceholder(["--dockerfile=", context.path, "/Dockerfile"]),
                dsl.ConcatPlaceholder(["--destination=", destination]),
                dsl.ConcatPlaceholder(["--digest-file=", digest]),
                "--reproducible",
                "--single-snapshot",
                *extra,
            ],
        )

    return kaniko_build


class KanikoBuilder(ImageBuilder):
    """Renders kaniko steps; cannot build on this machine."""

    name = "kaniko"

    def __init__(self, *, executor_image: str = KANIKO_EXECUTOR) -> None:
        self.executor_image = require_digest_pinned(executor_image)

    def render(self, spec: BuildSpec, context_dir: str, digest_file: str = "/dev/termination-log") -> dict:
        """The executor container for a pod (see :func:`kaniko_pod_container`)."""
        return kaniko_pod_container(spec, context_dir, digest_file, self.executor_image)

    def build(self, spec: BuildSpec, on_event: EventSink | None = None) -> BuildResult:
        raise BuilderUnavailable(
            "kaniko runs only inside a Kubernetes pod: use components.build_image.component's kaniko steps "
            "in a cluster pipeline, or --builder oci to build here without a daemon"
        )
