"""Keeping secrets out of logs: the agent token, and passwords in URLs.

The CLI knows which values are secret (``--token``, the password of ``--server``) and installs a
:class:`SecretFilter` on the log handlers, so that no logger — pulltrace's or a library's, at any
level — writes them. A URL is shown through :func:`redact_url` wherever pulltrace names one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "SecretFilter", "install_secret_filter", "redact_url"]

MASK = "***"
# An Authorization header as a library may print it: "Authorization: Bearer x",
# "'Authorization': 'Bearer x'", b'Authorization: Basic x\x00'.
_AUTH_HEADER = re.compile(r"""(authorization['"]?\s*[:=]\s*['"]?)[^'"\r\n]*""", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo masked (``http://user:***@host``); a userinfo
    without a password is masked whole, since a bare token is often sent that way."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not even a URL (e.g. an unbalanced "[")
        return _mask_userinfo(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, _password = userinfo.partition(":")
    shown = f"{user}:{MASK}" if sep else MASK
    return urlunsplit(parts._replace(netloc=f"{shown}@{hostport}"))


def _mask_userinfo(text: str) -> str:
    return re.sub(r"//[^/@\s]*@", f"//{MASK}@", text)


def url_password(url: str) -> str | None:
    """The secret part of ``url``'s userinfo (its password, or a bare user that may be a token)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if "@" not in parts.netloc:
        return None
    userinfo = parts.netloc.rpartition("@")[0]
    user, sep, password = userinfo.partition(":")
    return (password if sep else user) or None


class SecretFilter(logging.Filter):
    """Masks known secret values and Authorization header values in every record it sees.

    Installed on handlers (not loggers) so it also covers records propagated from libraries.
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        forms: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            forms.add(secret)
            # how the secret looks inside a printed bytes object: b'...\xc3\xa9...'
            forms.add(repr(secret.encode("utf-8", "surrogatepass"))[2:-1])
        # longest first, so a secret that contains another is masked whole
        self._secrets = sorted(forms, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return _AUTH_HEADER.sub(rf"\g<1>{MASK}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format is the handler's to report, not ours
            record.msg, record.args = self.redact(str(record.msg)), None
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def install_secret_filter(secrets: Iterable[str | None],
                          logger: logging.Logger | None = None) -> SecretFilter:
    """Add a :class:`SecretFilter` to every handler of ``logger`` (the root logger)."""
    found = SecretFilter(secrets)
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(found)
    return found
