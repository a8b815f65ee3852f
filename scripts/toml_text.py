"""Values written as TOML, for `dovecote config` to print a file that reads back as it was."""

from __future__ import annotations

import json
import re


def toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else toml_value(name)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # inf and nan are spelled as TOML spells them
    if isinstance(value, str):
        # JSON's escapes are TOML's, but for DEL, which TOML does not allow in a string as it is
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(str(name))} = {toml_value(item)}" for name, item in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")
