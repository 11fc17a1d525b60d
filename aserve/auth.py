"""Who may call what: bearer tokens from files, checked once per request by the service.

Every route and gRPC method declares its access level:

    open     health endpoints: never need a token
    metrics  the Prometheus page: needs a token only with --auth_metrics
    predict  everything else (inference, status, metadata)
    admin    model management (config reloads): a token from --admin_token_file when given

With ``--auth_token_file`` a request needs ``Authorization: Bearer <token>`` (the HTTP header,
or the gRPC ``authorization`` metadata with the same value); without it, or with a token no
file lists, the answer is UNAUTHENTICATED (HTTP 401, ``WWW-Authenticate: Bearer``), given
before the body is read. A valid prediction token on a management call is PERMISSION_DENIED
(403). Tokens are compared in constant time and never logged; token files are re-read when
they change (checked every second, off the loop).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Callable
from typing import Any, Final

from aserve.errors import Code, ServingError

log = logging.getLogger("aserve.auth")

ACCESS_LEVELS: Final = ("open", "metrics", "predict", "admin")
_CHALLENGE: Final = (("www-authenticate", "Bearer"),)


class Tokens:
    """The tokens of one file (one per line; blank lines and ``#`` comments ignored)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tokens: tuple[bytes, ...] = ()
        self._stamp: tuple[int, int, int] | None = None

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed since the last read (blocking: run it off the loop).

        A file that cannot be read keeps the tokens read last, with one log line.
        """
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return False
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
        except OSError as e:
            if self._stamp is not None:
                log.error("cannot read %s, keeping its last tokens: %s", self.path, e.strerror)
                self._stamp = None
            return False
        tokens = (line.strip() for line in lines)
        self._tokens = tuple(t for t in tokens if t and not t.startswith(b"#"))
        first, self._stamp = self._stamp is None, stamp
        log.info("%s %s: %d token(s)", "read" if first else "re-read", self.path, len(self._tokens))
        return True

    def __contains__(self, presented: object) -> bool:
        """Constant time in the token's value: every token is compared, always."""
        if not isinstance(presented, bytes):
            return False
        found = False
        for token in self._tokens:
            found |= hmac.compare_digest(presented, token)
        return found


class Authenticator:
    def __init__(
        self,
        *,
        tokens: Tokens | None = None,
        admin: Tokens | None = None,
        protect_metrics: bool = False,
    ) -> None:
        self._tokens = tokens
        self._admin = admin
        self._protect_metrics = protect_metrics

    @property
    def files(self) -> list[Tokens]:
        return [t for t in (self._tokens, self._admin) if t is not None]

    def check(self, access: str, authorization: bytes) -> None:
        """Raise UNAUTHENTICATED or PERMISSION_DENIED unless ``authorization`` (the header's
        value) grants ``access``."""
        if access == "open" or (access == "metrics" and not self._protect_metrics):
            return
        if self._tokens is None and self._admin is None:  # no token file: everything is open
            return
        token = _bearer(authorization)
        if access == "admin" and self._admin is not None:
            if token in self._admin:
                return
            if self._tokens is not None and token in self._tokens:
                raise ServingError(
                    Code.PERMISSION_DENIED,
                    "Model management needs a token from --admin_token_file",
                    refused="forbidden",
                )
            raise _unauthenticated(token)
        if self._tokens is None or token in self._tokens:
            return
        raise _unauthenticated(token)


def _bearer(authorization: bytes) -> bytes | None:
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


def _unauthenticated(token: bytes | None) -> ServingError:
    message = "Missing bearer token" if token is None else "Invalid bearer token"
    return ServingError(
        Code.UNAUTHENTICATED, message, headers=_CHALLENGE, refused="unauthenticated"
    )


async def watch(tokens: list[Tokens], io: Callable[..., Any], period_s: float = 1.0) -> None:
    """Forever: re-read each token file when it changes (a supervised task); ``io`` runs a
    blocking call off the loop (``WorkerPool.io``)."""
    while True:
        await asyncio.sleep(period_s)
        for file in tokens:
            await io(file.reload_if_changed)
