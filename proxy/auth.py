"""Bearer API keys with scopes: ``clip`` (M6: request and status) and ``admin`` (agents).

Only SHA-256 digests of the keys are held; a presented key is hashed and compared with
every digest in constant time, so neither timing nor logs reveal a key.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from proxy.settings import ProxySettings

DIGEST_PREFIX = "sha256:"


class Scope(StrEnum):
    CLIP = "clip"
    ADMIN = "admin"


def digest(key: str) -> str:
    return DIGEST_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(32)


def parse_scopes(text: str) -> frozenset[Scope]:
    try:
        return frozenset(Scope(part) for part in text.split("+"))
    except ValueError:
        raise ValueError(f"unknown scope in {text!r}; scopes are clip and admin") from None


@dataclass(frozen=True)
class ApiKeys:
    """Digest -> scopes of every accepted key."""

    scopes_by_digest: dict[str, frozenset[Scope]]

    @classmethod
    def from_settings(cls, settings: ProxySettings) -> "ApiKeys":
        entries: dict[str, frozenset[Scope]] = {}
        if settings.api_keys is not None:
            entries |= _parse_plain(settings.api_keys.get_secret_value())
        if settings.api_keys_file is not None:
            entries |= _parse_file(settings.api_keys_file)
        return cls(entries)

    def scopes_of(self, key: str) -> frozenset[Scope]:
        """The scopes of ``key``; empty when it is not a known key."""
        presented = digest(key)
        found: frozenset[Scope] = frozenset()
        for known, scopes in self.scopes_by_digest.items():
            if hmac.compare_digest(presented, known):
                found = scopes
        return found


def _parse_plain(text: str) -> dict[str, frozenset[Scope]]:
    entries = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        scopes, separator, key = entry.partition(":")
        if not separator or not key:
            raise ValueError("CLIPPING_PROXY_API_KEYS entries look like 'clip:<key>'")
        entries[digest(key)] = parse_scopes(scopes)
    return entries


def _parse_file(path: Path) -> dict[str, frozenset[Scope]]:
    entries = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        scopes, _, key_digest = line.partition(" ")
        key_digest = key_digest.strip()
        if not key_digest.startswith(DIGEST_PREFIX):
            raise ValueError(f"{path}:{number}: expected 'scopes sha256:<hex>'")
        entries[key_digest] = parse_scopes(scopes)
    return entries
