"""Traffic routers: how a canary's share is written, read back, promoted and rolled back, one file per mode.

See :mod:`serving.routers.base` for the interface and :func:`serving.routers.factory.make_router`.
"""
