"""Register step: a thin KFP component over :func:`model_registry.register_model`."""
