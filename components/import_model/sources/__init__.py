"""Model sources: one file per URI scheme, chosen by :func:`factory.source_for`."""
