"""Offline bootstrap: a generated task dataset and a tiny randomly initialised causal LM.

Nothing here touches a network. ``bootstrap://tiny`` resolves to a Hugging Face
model folder (safetensors) built by :func:`components.bootstrap.tiny.build_tiny_model`,
and :mod:`components.bootstrap.dataset` writes the task data it is trained on.
"""
