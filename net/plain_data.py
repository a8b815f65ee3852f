"""Structs as plain, JSON-ready data with field names, for people and scripts to read: the broker's
structs are arrays on the wire and on disk (`array_like`, defaults omitted), which
`msgspec.to_builtins` keeps, so this names every field instead."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import msgspec


def plain(value: object, field_name: Callable[[str], str] = str) -> Any:
    """JSON-ready data with field names (as `field_name` gives them); bytes as base64. Keys of
    dicts are data (attribute names), kept as they are."""
    if isinstance(value, msgspec.Struct):
        return {field_name(field): plain(getattr(value, field), field_name) for field in value.__struct_fields__}
    if isinstance(value, dict):
        return {key: plain(item, field_name) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item, field_name) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def aws_field_name(field: str) -> str:
    """A field's name as AWS's JSON names it: message_id -> MessageId, md5_of_body -> MD5OfBody."""
    return "".join(part.capitalize() for part in field.split("_")).replace("Md5", "MD5")
