"""KServe model server for causal LMs: batching engine, OpenAI routes, metrics, limits.

Modules: ``config`` (typed options), ``engine`` (continuous batching worker),
``sampling`` (per-row token choice, stop sequences), ``model`` (the ``kserve.Model``),
``openai_api`` (OpenAI routes), ``metrics`` (Prometheus, see ``METRICS.md``),
``server`` (argv and KServe wiring). Errors live in :mod:`serving.errors`.
"""
