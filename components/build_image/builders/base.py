"""The image-builder interface."""

from __future__ import annotations

import abc
from collections.abc import Callable

from components.build_image.spec import BuildEvent, BuildResult, BuildSpec

EventSink = Callable[[BuildEvent], None]


class ImageBuilder(abc.ABC):
    """Builds an image from a :class:`BuildSpec` and publishes it to the spec's target."""

    #: the factory name of this builder
    name: str = ""

    @abc.abstractmethod
    def build(self, spec: BuildSpec, on_event: EventSink | None = None) -> BuildResult:
        """Build and publish the image.

        Args:
            spec: what to build; validated by the builder.
            on_event: called with each :class:`BuildEvent` (layer built, blob sent or skipped, manifest pushed).

        Returns:
            The :class:`BuildResult` with the pinned reference ``repo@sha256:...``.

        Raises:
            ImageBuildError: any subclass; the message says what to fix.
        """
