"""The configuration file's remotes (`[remote.NAME]` tables) and shovels (`[[shovel]]` tables).

A remote names its secret's variable or file, never the secret itself; the secret is read when serve
starts. A shovel's ends are checked against the remotes when the whole configuration is assembled
(actors/shovel_core.py says what a shovel may link).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import msgspec

from dovecote.actors.shovel_core import RemoteConfig, ShovelConfig, ShovelConfigError, check_shovels

from .secret_files import SecretUnavailable, read_secret
from .toml_text import toml_value

REMOTE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
REMOTE_FIELDS = ("endpoint_url", "region", "access_key_id", "secret_access_key_env", "secret_access_key_file", "verify", "timeout_s")
# The file's `from` and `to` are Python keywords' neighbours; the struct says source and destination.
SHOVEL_RENAMES = {"from": "source", "to": "destination"}


class ConfigProblem(ValueError):
    """One line: what is wrong, for config.py to prefix with the file and line."""


class RemoteSpec(NamedTuple):
    """A [remote.NAME] table as the file gives it: where its secret is, not the secret."""

    name: str
    endpoint_url: str
    region: str
    access_key_id: str
    secret_env: str
    secret_file: str  # absolute ("" when secret_env names the secret)
    verify: bool | str
    timeout_s: float


def read_remotes(value: object, path: str, text: str) -> tuple[RemoteSpec, ...]:
    """The [remote.NAME] tables; raises ValueError naming the remote and the line."""
    if not isinstance(value, dict):
        raise ConfigProblem(f"{path}: remote: each remote is a table, [remote.NAME]")
    base = os.path.dirname(os.path.abspath(path))
    specs = []
    for name, table in value.items():
        line = _header_line(text, rf"\[\s*remote\s*\.\s*[\"']?{re.escape(name)}[\"']?\s*\]")
        try:
            specs.append(_remote_spec(name, table, base))
        except ValueError as error:
            raise ConfigProblem(f"{path}:{line}: remote {name}: {error}") from None
    return tuple(specs)


def _remote_spec(name: str, table: object, base: str) -> RemoteSpec:
    if not REMOTE_NAME.fullmatch(name):
        raise ValueError("a remote's name is 1 to 64 letters, digits, _ or -")
    if not isinstance(table, dict):
        raise ValueError("must be a table")
    unknown = sorted(set(table) - set(REMOTE_FIELDS))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (a remote has {', '.join(REMOTE_FIELDS)})")
    for field in ("endpoint_url", "region", "access_key_id"):
        if not isinstance(table.get(field), str) or not table[field]:
            raise ValueError(f"{field} must be given, as a non-empty string")
    if not re.match(r"https?://[^/]+", table["endpoint_url"]):
        raise ValueError(f"endpoint_url must be an http:// or https:// URL, not {table['endpoint_url']!r}")
    sources = [field for field in ("secret_access_key_env", "secret_access_key_file") if field in table]
    if len(sources) != 1 or not isinstance(table[sources[0]], str) or not table[sources[0]]:
        raise ValueError("give secret_access_key_env or secret_access_key_file (the secret itself is never written here)")
    verify = table.get("verify", True)
    if not isinstance(verify, bool | str):
        raise ValueError("verify is true, false, or a CA bundle file")
    timeout_s = table.get("timeout_s", 30.0)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
        raise ValueError("timeout_s must be a number of seconds above 0")
    secret_file = os.path.join(base, table["secret_access_key_file"]) if sources[0] == "secret_access_key_file" else ""
    verify = os.path.join(base, verify) if isinstance(verify, str) else verify
    return RemoteSpec(
        name, table["endpoint_url"], table["region"], table["access_key_id"], table.get("secret_access_key_env", ""),
        secret_file, verify, float(timeout_s),
    )


def read_shovels(value: object, path: str, text: str) -> tuple[ShovelConfig, ...]:
    """The [[shovel]] tables, each checked alone (their ends are checked with the remotes later)."""
    tables = value if isinstance(value, list) else [value]
    headers = [number for number, line in enumerate(text.splitlines(), 1) if re.match(r"\s*\[\[\s*shovel\s*\]\]", line)]
    shovels = []
    for index, table in enumerate(tables):
        line = headers[index] if index < len(headers) else "?"
        try:
            if not isinstance(table, dict):
                raise ValueError("each shovel is a table, [[shovel]]")
            fields = {SHOVEL_RENAMES.get(key, key): item for key, item in table.items()}
            for required in ("name", "source", "destination"):
                if required not in fields:
                    raise ValueError(f"{ {'source': 'from', 'destination': 'to'}.get(required, required)} must be given")
            shovels.append(msgspec.convert(fields, ShovelConfig, strict=False))
        except (ValueError, msgspec.ValidationError) as error:
            message = str(error).replace("`$.source`", "`from`").replace("`$.destination`", "`to`").replace("`$.", "`")
            raise ConfigProblem(f"{path}:{line}: shovel: {message}") from None
    return tuple(shovels)


def read_secrets(specs: Sequence[RemoteSpec], environ: Mapping[str, str] | None = None) -> tuple[RemoteConfig, ...]:
    """The remotes with their secrets read (when serve starts); ValueError naming the remote whose
    secret cannot be had."""
    environ = os.environ if environ is None else environ
    remotes = []
    for spec in specs:
        try:
            secret = read_secret(spec.secret_env, spec.secret_file, environ)
        except SecretUnavailable as error:
            raise ConfigProblem(f"remote {spec.name}: {error}") from None
        remotes.append(RemoteConfig(
            spec.name, spec.endpoint_url, spec.region, spec.access_key_id, secret, spec.verify, spec.timeout_s,
        ))
    return tuple(remotes)


def check_links(shovels: Sequence[ShovelConfig], remotes: Sequence[RemoteSpec]) -> None:
    """Every shovel's ends, against the remotes the file names; ConfigProblem naming the shovel."""
    try:
        check_shovels(shovels, {remote.name: remote for remote in remotes})
    except ShovelConfigError as error:
        raise ConfigProblem(str(error)) from None


def render_remotes(specs: Sequence[RemoteSpec], source: str) -> list[str]:
    lines = ["", f"# remotes, from {source}; each secret is read from its variable or file when serve starts"]
    for spec in specs:
        lines += ["", f"[remote.{spec.name}]"]
        lines += [f"{field} = {toml_value(getattr(spec, field))}" for field in ("endpoint_url", "region", "access_key_id")]
        lines.append(f"secret_access_key_env = {toml_value(spec.secret_env)}" if spec.secret_env else f"secret_access_key_file = {toml_value(spec.secret_file)}")
        lines += [f"verify = {toml_value(spec.verify)}", f"timeout_s = {toml_value(spec.timeout_s)}"]
    return lines


def render_shovels(shovels: Sequence[ShovelConfig], source: str) -> list[str]:
    lines = ["", f"# shovels, from {source}"]
    names = {value: key for key, value in SHOVEL_RENAMES.items()}
    for shovel in shovels:
        lines += ["", "[[shovel]]"]
        for field in shovel.__struct_fields__:
            lines.append(f"{names.get(field, field)} = {toml_value(getattr(shovel, field))}")
    return lines


def _header_line(text: str, pattern: str) -> int | str:
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(r"\s*" + pattern, line):
            return number
    return "?"
