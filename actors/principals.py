"""Who is asking: the principal a request acts as, and the access keys a broker knows. Pure.

Every door of the broker (the AWS API, the native protocol, the broker's own endpoints) proves a
request's key with its own means (a SigV4 signature, a handshake, a client certificate) and then
acts as that key's principal; a session carries it to wherever the request is served. Without any
key configured, authentication is off and every request acts as ANYONE.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple


class Principal(NamedTuple):
    key_id: str  # the access key's id; "" for ANYONE


ANYONE = Principal("")  # authentication is off: requests carry no proven key


class Keyring:
    """The access keys a broker knows: each key's secret and its principal."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        """secrets: access key id -> secret."""
        self._secrets = dict(secrets)
        self._principals = {key_id: Principal(key_id) for key_id in self._secrets}

    def __bool__(self) -> bool:
        """Whether authentication is on (any key is known)."""
        return bool(self._secrets)

    def secret(self, key_id: str) -> str | None:
        return self._secrets.get(key_id)

    def principal(self, key_id: str) -> Principal:
        """The principal of a key whose proof was checked (a key the keyring knows)."""
        return self._principals[key_id]

    def certificate_principal(self, common_name: str) -> Principal | None:
        """The principal a verified TLS client certificate acts as: the key whose id is the
        certificate's subject common name, or None when no key has that id."""
        return self._principals.get(common_name)
