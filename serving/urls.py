"""Credentials in URLs are never printed: :func:`mask_credentials`.

A small local helper until the project's single redaction function lands
(issue 13); every message here that names a Prometheus, Kubernetes or MLflow
address passes it through this first.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


def mask_credentials(text: str) -> str:
    """``https://user:pass@host/x`` -> ``https://***@host/x`` (anywhere in ``text``)."""
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", str(text))
