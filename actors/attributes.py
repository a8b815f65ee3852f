"""Message attributes cross from the protocol's type to the store's here, and back. Pure."""

from __future__ import annotations

from collections.abc import Mapping

from dovecote.storage.records import MessageAttribute

from .ops import MessageAttributeValue

AnyAttribute = MessageAttribute | MessageAttributeValue  # what validation, filters and checksums read alike


def to_stored(attributes: Mapping[str, MessageAttributeValue]) -> dict[str, MessageAttribute]:
    return {name: MessageAttribute(v.data_type, v.string_value, v.binary_value) for name, v in attributes.items()}


def to_wire(attributes: Mapping[str, MessageAttribute]) -> dict[str, MessageAttributeValue]:
    return {name: MessageAttributeValue(v.data_type, v.string_value, v.binary_value) for name, v in attributes.items()}
