"""How deep a JSON document nests, found before it is parsed. Pure.

Parsers recurse once per level (msgspec's and the standard library's alike) and raise RecursionError
somewhere near a thousand levels, wherever the stack already stands, so a document's depth is
checked first, in one linear pass: strings are cut out (a bracket inside a message body is text),
every bracket becomes a step up or down, and the running sum is the depth. No AWS shape nests
deeper than a handful of levels; MAX_JSON_DEPTH leaves room for message bodies matched by a filter
policy.
"""

from __future__ import annotations

import operator
import re
from itertools import accumulate

MAX_JSON_DEPTH = 64

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes(2 if b in b"[{" else 0 for b in range(256))  # an opener 2, a closer 0: depth = sum - count


def deeper_than(text: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `text`, read as JSON, nests more than `limit` arrays and objects deep. Text that is not
    JSON may be called either; its parser refuses it anyway."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if data.count(b"[") + data.count(b"{") <= limit:  # the common case: too few brackets to matter
        return False
    skeleton = _STRING.sub(b"", data).translate(_STEPS, _NOT_BRACKETS)
    depths = map(operator.sub, accumulate(skeleton), range(1, len(skeleton) + 1))
    return max(depths, default=0) > limit
