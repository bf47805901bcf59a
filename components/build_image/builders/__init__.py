"""Image builders: one interface (:mod:`.base`), one file per implementation, a factory."""
