"""Structs as plain, JSON-ready data with field names, for people and scripts to read: the broker's
structs are arrays on the wire and on disk (`array_like`, defaults omitted), which
`msgspec.to_builtins` keeps, so this names every field instead."""

from __future__ import annotations

import base64
from typing import Any

import msgspec


def plain(value: object) -> Any:
    """JSON-ready data with field names; bytes as base64."""
    if isinstance(value, msgspec.Struct):
        return {field: plain(getattr(value, field)) for field in value.__struct_fields__}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value
