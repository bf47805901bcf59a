"""The cluster kit: manifests, their renderer and validation, RBAC evaluation.

See :mod:`serving.cluster.render` and ``docs/cluster.md``.
"""
