"""Where the configuration file's secrets are read from when serve starts: a variable or a file
(never the file itself, which `dovecote config` prints and command lines show)."""

from __future__ import annotations

from collections.abc import Mapping


class SecretUnavailable(ValueError):
    """A secret that cannot be had, in words (the caller says whose)."""


def read_secret(secret_env: str, secret_file: str, environ: Mapping[str, str]) -> str:
    """The secret in the variable `secret_env`, else in the file `secret_file` (stripped)."""
    if secret_env:
        secret = environ.get(secret_env, "")
        if not secret:
            raise SecretUnavailable(f"the variable ${secret_env} that holds its secret is not set")
        return secret
    try:
        with open(secret_file, encoding="utf-8") as file:
            secret = file.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise SecretUnavailable(f"cannot read its secret file {secret_file}: {getattr(error, 'strerror', None) or error}") from None
    if not secret:
        raise SecretUnavailable(f"its secret file {secret_file} is empty")
    return secret
