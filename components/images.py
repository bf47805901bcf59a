"""Container images the pipeline components run in.

``BASE_IMAGE`` is built from ``components/Dockerfile`` by the CI workflow in
``ci/`` (it holds this package and its dependencies, so components install
nothing at run time). Point it at your registry by editing this constant or by
pushing the image under this name.
"""

BASE_IMAGE = "ghcr.io/llmops/llmops-components:0.1.0"
# Components run in BASE_IMAGE, which already holds llmops: nothing to pip install.
PACKAGES: list[str] = []
