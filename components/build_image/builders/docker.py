"""Docker builder: ``docker build`` + ``docker push`` through the docker SDK, when a daemon is reachable.

Not reproducible (the daemon stamps times); use it where a team already builds
with Docker. Without a daemon it fails at once with the fix: start dockerd or
use the daemonless ``oci`` builder.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from components.build_image.builders.base import EventSink, ImageBuilder
from components.build_image.dockerfile import write_build_context
from oci_images.errors import AuthError, BuilderUnavailable, ImageBuildError
from oci_images.reference import ImageRef, LayoutRef, parse_target
from components.build_image.spec import BuildEvent, BuildResult, BuildSpec

log = logging.getLogger(__name__)


class DockerBuilder(ImageBuilder):
    """Builds with a Docker daemon.

    Args:
        base_url: daemon address (default: ``DOCKER_HOST`` or the local socket).
    """

    name = "docker"

    def __init__(self, *, base_url: str | None = None) -> None:
        self._base_url = base_url

    def client(self):
        """A connected docker SDK client, or :class:`BuilderUnavailable` with the fix."""
        import docker

        try:
            client = docker.DockerClient(base_url=self._base_url) if self._base_url else docker.from_env()
            client.ping()
        except Exception as exc:  # docker raises DockerException, requests errors, FileNotFoundError...
            where = self._base_url or "DOCKER_HOST / unix:///var/run/docker.sock"
            raise BuilderUnavailable(
                f"no Docker daemon reachable at {where} ({type(exc).__name__}): start dockerd or use --builder oci "
                "(daemonless, the default)"
            ) from exc
        return client

    def build(self, spec: BuildSpec, on_event: EventSink | None = None) -> BuildResult:
        try:
            spec.validate()
        except ValueError as exc:
            raise ImageBuildError(f"invalid build request: {exc}") from exc
        target = parse_target(spec.target)
        if isinstance(target, LayoutRef):
            raise ImageBuildError("the docker builder pushes to registries only; use --builder oci for oci-layout:")
        assert isinstance(target, ImageRef)
        client = self.client()
        started = time.perf_counter()
        tag = spec.tag or target.tag or "latest"
        repo = f"{target.registry}/{target.repository}"
        with tempfile.TemporaryDirectory(prefix="llmops-docker-") as tmp:
            ctx = write_build_context(spec, Path(tmp))
            import docker

            try:
                image, _ = client.images.build(path=str(ctx), tag=f"{repo}:{tag}", rm=True, pull=False,
                                               platform=spec.platform)
            except docker.errors.BuildError as exc:
                raise ImageBuildError(f"docker build failed: {exc.msg}") from exc
        auth = None
        if spec.credentials and spec.credentials.username:
            auth = {"username": spec.credentials.username, "password": spec.credentials.password}
        digest = None
        for line in client.images.push(repo, tag=tag, stream=True, decode=True, auth_config=auth):
            if "error" in line:
                msg = line.get("error", "")
                if "unauthorized" in msg or "denied" in msg:
                    raise AuthError(f"registry {target.registry} refused the push: {msg}; check credentials")
                raise ImageBuildError(f"docker push failed: {msg}")
            digest = (line.get("aux") or {}).get("Digest", digest)
        if not digest:
            raise ImageBuildError("docker push finished without reporting a digest")
        if on_event:
            on_event(BuildEvent(kind="manifest_pushed", digest=digest, size=0, detail=f"{repo}:{tag}"))
        return BuildResult(
            reference=f"{repo}@{digest}", digest=digest, tag=tag, layers=(), bytes_uploaded=0,
            blobs_uploaded=0, blobs_skipped=0, wall_s=time.perf_counter() - started, builder=self.name,
        )
