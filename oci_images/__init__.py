"""OCI images at the bottom layer: references, registry credentials, the distribution client, pulls.

Both the image build (``components.build_image``) and the local serving backend
(which pulls modelcars) need these, so they live below both (the layering test,
``tests/unit/architecture/test_layering.py``, keeps it so)::

    oci_images.errors      ImageBuildError and its subclasses (unreachable, auth, protocol...)
    oci_images.reference   parse_image_ref / parse_target: registry refs and oci-layout: paths
    oci_images.auth        credentials from a Docker config (DOCKER_CONFIG), bearer-token exchange
    oci_images.registry    RegistryClient: the OCI distribution API (blobs, manifests, chunked uploads)
    oci_images.layout      OCI image layout folders (oci-layout:/dir)
    oci_images.pull        pull_model: a modelcar's /models into a folder, digest-verified, size-limited
"""
