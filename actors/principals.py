"""Who is asking: the principal a request acts as, and the access keys a broker knows. Pure.

Every door of the broker (the AWS API, the native protocol, the broker's own endpoints) proves a
request's key with its own means (a SigV4 signature, a handshake, a client certificate) and then acts as that key's
principal; a session carries it to wherever the request is served, and authorization.py's `decide`
says what it may do there. Without any key configured, authentication is off and every request acts
as ANYONE, which is allowed everything.

Two kinds of key: those given with --access-key ID:SECRET, allowed everything (as before keys had
permissions), and those of the configuration file, each with its own statements (and, if it says
so, an account of its own).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from .authorization import SNS_SERVICE, Permissions


class Principal(NamedTuple):
    key_id: str  # the access key's id; "" for ANYONE and for a service
    account_id: str = ""  # the account the key belongs to; "": the one this broker hosts
    permissions: Permissions | None = None  # its own statements; None: allowed everything
    service: str = ""  # a service principal (sns.amazonaws.com delivering a topic's message)

    @property
    def unrestricted(self) -> bool:
        """Allowed everything: authorisation need not be asked."""
        return self.permissions is None

    def arn(self, broker_account: str) -> str:
        """How policies and error messages name it: `arn:aws:iam::ACCOUNT:user/KEY_ID`."""
        if self.service:
            return self.service
        if not self.key_id:
            return "anonymous"
        return f"arn:aws:iam::{self.account_id or broker_account}:user/{self.key_id}"


ANYONE = Principal("")  # authentication is off: requests carry no proven key, and may do anything
SNS = Principal("", permissions=Permissions(()), service=SNS_SERVICE)  # a topic delivering into a queue


class Key(NamedTuple):
    """A key of the configuration file: its secret (read from a file or a variable, never a flag),
    its statements, and its account if not the broker's."""

    key_id: str
    secret: str
    permissions: Permissions
    account_id: str = ""


class Keyring:
    """The access keys a broker knows: each key's secret and its principal."""

    def __init__(self, secrets: Mapping[str, str], keys: Iterable[Key] = ()) -> None:
        """secrets: access key id -> secret, keys allowed everything (--access-key); keys: those
        with permissions. Raises ValueError when an id is given twice."""
        self._secrets = dict(secrets)
        self._principals = {key_id: Principal(key_id) for key_id in self._secrets}
        for key in keys:
            if key.key_id in self._secrets:
                raise ValueError(f"the access key {key.key_id} is given twice")
            self._secrets[key.key_id] = key.secret
            self._principals[key.key_id] = Principal(key.key_id, key.account_id, key.permissions)

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
