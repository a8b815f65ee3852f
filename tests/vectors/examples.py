"""One example of every kind of operation, result and record, each field set to a value made from
the field's name and type."""

from __future__ import annotations

import msgspec

from dovecote.actors import ops
from dovecote.storage import records


def _value(info: msgspec.inspect.Type, name: str, depth: int = 0):
    if isinstance(info, msgspec.inspect.UnionType):
        chosen = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
        return _value(chosen, name, depth)
    if isinstance(info, msgspec.inspect.StrType):
        return f"{name}-value"
    if isinstance(info, msgspec.inspect.BoolType):
        return True
    if isinstance(info, msgspec.inspect.IntType):
        return 1000 + sum(map(ord, name))  # differs between fields, the same in every run
    if isinstance(info, msgspec.inspect.BytesType):
        return name.encode() + b"\x00\xff"
    if isinstance(info, msgspec.inspect.ListType):
        return [_value(info.item_type, f"{name}-item", depth + 1)]
    if isinstance(info, msgspec.inspect.DictType):
        return {f"{name}-key": _value(info.value_type, f"{name}-entry", depth + 1)}
    if isinstance(info, msgspec.inspect.StructType):
        return example_of(info.cls, depth + 1)
    raise TypeError(f"no example value for {info!r} ({name})")


def example_of(cls: type, depth: int = 0):
    """An instance of the struct `cls` with every field set."""
    info = msgspec.inspect.type_info(cls)
    return cls(**{field.name: _value(field.type, field.name, depth) for field in info.fields})


def kinds(union: object) -> list[type]:
    return [t.cls for t in msgspec.inspect.type_info(union).types]


OPERATIONS = {cls.__struct_config__.tag: example_of(cls) for cls in kinds(ops.AnyOp)}
RESULTS = {cls.__struct_config__.tag: example_of(cls) for cls in kinds(ops.AnyResult)}
RECORDS = {cls.__struct_config__.tag: example_of(cls) for cls in kinds(records.AnyRecord)}
