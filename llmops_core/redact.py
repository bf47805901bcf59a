"""Mask credentials in text: one function every log line, error and report passes through.

:func:`redact` masks

* the password of a URI's user-info (``https://user:pw@host`` -> ``https://user:***@host``)
  and a user-info without a password, which is usually a token
  (``https://ghp_x@host`` -> ``https://***@host``); an ``@sha256:`` digest is not user-info;
* ``Authorization: Bearer/Basic <value>`` and ``Bearer <value>``;
* ``key=value`` / ``key: value`` / ``"key": "value"`` pairs whose key names a secret
  (password, passwd, secret, token, api_key, access_key, private_key, credentials,
  signature, sig), in query strings, argv and JSON;
* the literal values of environment variables whose names say they hold a secret
  (``*PASSWORD*``, ``*TOKEN*``, ``*SECRET*``, ``*API_KEY*``, ``*ACCESS_KEY*``...), and values
  given to :func:`register_secret` (a password read from stdin).

:class:`RedactingFilter` applies it to log records (message, arguments and
formatted traceback); ``pipelines.cli`` installs it on the root handlers and
passes every error message through :func:`redact`; report writers redact
what they write.
"""

from __future__ import annotations

import logging
import os
import re
import threading

MASK = "***"
MIN_SECRET_LEN = 6  # shorter env values ("true", "1") would mask ordinary words

_SECRET_ENV = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH", re.I)
# scheme://userinfo@ : userinfo has no '/', '@' or whitespace; "@sha256:" is an image digest, not userinfo
_URI_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<info>[^/@\s'\"<>]+)@(?!sha256:)")
_AUTH_HEADER = re.compile(r"(?P<lead>\b(?:Bearer|Basic|Token)\s+)(?P<value>[A-Za-z0-9._~+/\-=]{6,})", re.I)
_KEYS = r"(?:[A-Za-z0-9_\-]*(?:password|passwd|secret(?:[_\-]?(?:access[_\-]?)?key)?|token|api[_\-]?key|access[_\-]?key|private[_\-]?key|credentials?)|sig|signature|x-amz-signature|x-amz-credential)"
# key=value (query strings, argv, env dumps); key: value and "key": "value" (YAML, JSON, headers)
_KV = re.compile(
    rf"(?P<key>(?<![A-Za-z0-9_\-]){_KEYS})(?P<sep>\"?\s*[=:]\s*\"?)(?P<value>(?!\*\*\*)(?!(?:true|false|null|none)(?![^\s&\"',;}}\]]))[^\s&\"',;}}\]]+)",
    re.I,
)

_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears from now on (a password read from stdin, a token flag)."""
    if value and len(value) >= MIN_SECRET_LEN:
        with _lock:
            _registered.add(value)


def _env_secrets() -> list[str]:
    values = {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and v and len(v) >= MIN_SECRET_LEN}
    with _lock:
        values |= _registered
    # longest first, so a secret containing another is masked whole
    return sorted(values, key=len, reverse=True)


def _userinfo(match: re.Match) -> str:
    info = match.group("info")
    user, sep, _ = info.partition(":")
    return f"{match.group('scheme')}{user}:{MASK}@" if sep else f"{match.group('scheme')}{MASK}@"


def redact(text: object) -> str:
    """``text`` (``str()`` of it) with every credential replaced by ``***``.

    Args:
        text: a message, URI, argv line, JSON or YAML document.

    Returns:
        The masked text; text without credentials is returned unchanged.
    """
    out = text if isinstance(text, str) else str(text)
    if not out:
        return out
    for secret in _env_secrets():
        if secret in out:
            out = out.replace(secret, MASK)
    out = _URI_USERINFO.sub(_userinfo, out)
    out = _AUTH_HEADER.sub(lambda m: m.group("lead") + MASK, out)
    out = _KV.sub(lambda m: m.group("key") + m.group("sep") + MASK, out)
    return out


class RedactingFilter(logging.Filter):
    """A logging filter that masks credentials in the message, its arguments and its traceback.

    Install it on handlers (a filter on a logger does not see records of its
    children): :func:`install`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw parts, masked
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(logger: logging.Logger | None = None) -> RedactingFilter:
    """Add one :class:`RedactingFilter` to every handler of ``logger`` (default: root)."""
    logger = logger or logging.getLogger()
    flt = next((f for h in logger.handlers for f in h.filters if isinstance(f, RedactingFilter)), None) or RedactingFilter()
    for handler in logger.handlers:
        if flt not in handler.filters:
            handler.addFilter(flt)
    return flt


class RedactingStream:
    """A text stream wrapper that masks credentials in everything written to it.

    ``pipelines.cli`` wraps ``sys.stdout`` and ``sys.stderr`` with it while a
    command runs, so a ``print`` of a URI cannot leak a password either.
    """

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)
