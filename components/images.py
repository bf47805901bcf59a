"""Container images the pipeline components run in.

``BASE_IMAGE`` is the image CI builds from ``components/Dockerfile`` and pushes as
``<registry>/llmops-components:<version>`` (and ``:<commit sha>``); the names come
from :mod:`serving.cluster.names`. It holds llmops and every dependency, kfp
included, so a step installs nothing when it starts (air-gapped clusters work):
``COMPONENT_OPTIONS`` turns off KFP's ``pip install kfp`` preamble.
"""

from serving.cluster.names import COMPONENTS_IMAGE

BASE_IMAGE = COMPONENTS_IMAGE
# Components run in BASE_IMAGE, which already holds llmops: nothing to pip install.
PACKAGES: list[str] = []
# Keyword arguments of every @dsl.component: no pip install at step start.
COMPONENT_OPTIONS = {"base_image": BASE_IMAGE, "packages_to_install": PACKAGES, "install_kfp_package": False}
