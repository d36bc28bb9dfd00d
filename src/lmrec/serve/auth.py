"""API keys: `Authorization: Bearer KEY`, required for writes and admin, and for reads unless public.

Keys come from `LMREC_API_KEYS` (comma-separated) and/or a file with one key per line (blank lines and
`#` comments ignored). They are compared in constant time. With no key configured the service is open,
which `lmrec serve` allows only on a loopback address.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Literal

from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lmrec.errors import LmrecError
from lmrec.serve.schemas import AuthInfo

KEYS_ENV = "LMREC_API_KEYS"
MIN_KEY_LENGTH = 16

bearer = HTTPBearer(auto_error=False, description="an API key from LMREC_API_KEYS or --api-keys-file")


def load_keys(file: str | Path | None = None, env: str | None = None) -> frozenset[str]:
    """The configured keys: `$LMREC_API_KEYS` (or `env`) plus the lines of `file`."""
    text = os.environ.get(KEYS_ENV, "") if env is None else env
    keys = [k.strip() for k in text.split(",")]
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise LmrecError(f"API keys file {path} does not exist.")
        keys += [line.strip() for line in path.read_text().splitlines() if not line.strip().startswith("#")]
    keys = [k for k in keys if k]
    short = [k for k in keys if len(k) < MIN_KEY_LENGTH or not k.isprintable() or " " in k]
    if short:
        raise LmrecError(
            f"{len(short)} API key(s) are shorter than {MIN_KEY_LENGTH} characters or hold spaces or control "
            "characters; use long random keys, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        )
    return frozenset(keys)


class ApiKeys:
    """FastAPI dependencies that check the bearer key for writes and (unless public) reads."""

    def __init__(self, keys: frozenset[str], public_reads: bool = False) -> None:
        self.keys = tuple(k.encode() for k in keys)
        self.public_reads = public_reads

    def key_state(self, credentials: HTTPAuthorizationCredentials | None) -> Literal["valid", "invalid", "absent"]:
        """Whether a request sent no bearer key, a configured one (compared in constant time) or another."""
        if credentials is None or credentials.scheme.lower() != "bearer":
            return "absent"
        given = credentials.credentials.encode("utf-8", "surrogateescape")
        return "valid" if any(hmac.compare_digest(given, key) for key in self.keys) else "invalid"

    def _check(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        if not self.keys:
            return
        state = self.key_state(credentials)
        if state == "absent":
            raise HTTPException(
                401, "this endpoint needs an API key: send 'Authorization: Bearer KEY'.",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        if state == "invalid":
            raise HTTPException(
                401, "the API key is not valid.", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )

    def describe(self, credentials: HTTPAuthorizationCredentials | None) -> AuthInfo:
        """What needs a key here and whether this request's key is valid, so a client can ask before it reads."""
        needs = "key" if self.keys else "public"
        return AuthInfo(reads="public" if self.public_reads else needs, writes=needs, key=self.key_state(credentials))

    async def writer(self, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        """Writes and admin endpoints always need a key (when keys are configured). A coroutine, though it
        never waits: FastAPI runs plain dependencies in a worker thread, and that hand-off cost more than
        the rest of a remembered reply."""
        self._check(credentials)

    async def reader(self, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        """Reads need a key unless the service runs with --public-reads."""
        if not self.public_reads:
            self._check(credentials)
