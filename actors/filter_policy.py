"""SNS subscription filter policies: validated and compiled once, matched per message. Pure.

The grammar is AWS's: a JSON object whose keys name message attributes (FilterPolicyScope
MessageAttributes) or paths into a JSON message body (MessageBody, with nested objects), each
with an array of conditions, any of which may match; every key must match; `$or` takes a list of
such objects, any of which may match. Conditions: exact strings, numbers, booleans and null,
`prefix`, `suffix`, `equals-ignore-case`, `wildcard`, `anything-but` (values, a prefix, a suffix),
`numeric` comparisons and ranges, `exists`, and `cidr`. Arrays on the message side (String.Array
attributes, JSON arrays in the body, arrays of arrays) match when any element does. Numbers compare
with AWS's five digits after the decimal point. In the body, a dotted key (`"order.status"`) names
the nested path as well as a key with a dot in it, as AWS matches it. An empty policy (`{}`) is
accepted and matches every message, as on AWS.

Matching answers with the first key that failed (None when the message matches), so one evaluator
serves both routing and the `explain` question "why did this subscription not get my message?".
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any


from .attributes import AnyAttribute
from .errors import BrokerError, invalid_parameter
from .json_depth import MAX_JSON_DEPTH, deeper_than

ATTRIBUTES, BODY = "MessageAttributes", "MessageBody"
MAX_KEYS = 5
MAX_COMBINATIONS = 150
MAX_POLICY_BYTES = 256 * 1024
MAX_NUMBER = 1e9
DECIMAL_DIGITS = 5  # AWS: "five digits of accuracy after the decimal point"
_NUMERIC_OPERATORS = {"=", "<", "<=", ">", ">="}
_MISSING: list[Any] = []

Predicate = Callable[[Any], bool]


def _refuse(reason: str) -> BrokerError:
    """A policy AWS refuses, in its words (SetSubscriptionAttributes'; Subscribe adds
    "Attributes Reason: ", sns_validation.validate_subscription_attributes)."""
    return invalid_parameter(f"FilterPolicy: {reason}")


class Leaf:
    """One key of a policy and its conditions."""

    __slots__ = ("path", "keys", "predicates", "exists", "negated")

    def __init__(self, keys: tuple[str, ...], predicates: list[Predicate], exists: bool | None, negated: list[Predicate]):
        self.keys = keys
        self.path = ".".join(keys)
        self.predicates = predicates  # any may match a value
        self.exists = exists  # an `exists` condition, if the key has one
        self.negated = negated  # anything-but: a value matches when none of these do

    def fails(self, values: list[Any] | None) -> bool:
        """values: the message's values at this key (None when the key is absent)."""
        if values is None:
            return self.exists is not False
        if self.exists is not None:
            return not self.exists
        for value in values:
            if any(predicate(value) for predicate in self.predicates):
                return False
            if self.negated and not any(predicate(value) for predicate in self.negated):
                return False
        return True


class Conjunction:
    """Every leaf and every `$or` must match."""

    __slots__ = ("leaves", "alternatives")

    def __init__(self, leaves: list[Leaf], alternatives: list[list[Conjunction]]):
        self.leaves = leaves
        self.alternatives = alternatives


class MessageView:
    """One message as policies see it: its values by key, looked up once however many policies
    ask (and its body parsed once)."""

    __slots__ = ("attributes", "body", "_values", "_document")

    def __init__(self, attributes: Mapping[str, AnyAttribute], body: str) -> None:
        self.attributes = attributes
        self.body = body
        self._values: dict[tuple[str, str], list[Any] | None] = {}
        self._document: Any = _MISSING

    def document(self) -> Any:
        """The body as JSON (None when it is not JSON)."""
        if self._document is _MISSING:
            try:
                self._document = None if deeper_than(self.body) else json.loads(self.body)
            except ValueError:
                self._document = None
        return self._document

    def values(self, scope: str, leaf: Leaf) -> list[Any] | None:
        key = (scope, leaf.path)
        if key not in self._values:
            if scope == BODY:
                self._values[key] = _body_values(self.document(), leaf.keys)
            else:
                self._values[key] = _attribute_values(self.attributes, leaf.path)
        return self._values[key]


class FilterPolicy:
    """A compiled policy; `first_failure` is the matcher."""

    __slots__ = ("scope", "root", "source")

    def __init__(self, scope: str, root: Conjunction, source: str):
        self.scope = scope
        self.root = root
        self.source = source

    def first_failure(self, message: MessageView) -> str | None:
        """The path of the first key that did not match, or None when the message matches."""
        if not self.root.leaves and not self.root.alternatives:
            return None  # `{}`: AWS accepts it, and it lets every message through
        if self.scope == BODY:
            document = message.document()
            if document is None:
                return "(the message body is not JSON)"
            if not isinstance(document, dict):
                return "(the message body is not a JSON object)"
        scope = self.scope
        return _first_failure(self.root, lambda leaf: message.values(scope, leaf))

    def matches(self, attributes: Mapping[str, AnyAttribute], body: str, view: MessageView | None = None) -> bool:
        return self.first_failure(view or MessageView(attributes, body)) is None

    def matches_document(self, document: dict[str, Any]) -> bool:
        """An event pattern's match (compile_event_pattern) against a parsed event."""
        return _first_failure(self.root, lambda leaf: _body_values(document, leaf.keys)) is None


def _first_failure(conjunction: Conjunction, lookup: Callable[[Leaf], list[Any] | None]) -> str | None:
    for leaf in conjunction.leaves:
        if leaf.fails(lookup(leaf)):
            return leaf.path
    for branches in conjunction.alternatives:
        failures = [_first_failure(branch, lookup) for branch in branches]
        if all(failure is not None for failure in failures):
            return "$or: " + " / ".join(failure or "" for failure in failures)
    return None


# --- the message's side ---------------------------------------------------------------------------
def _attribute_values(attributes: Mapping[str, AnyAttribute], name: str) -> list[Any] | None:
    attribute = attributes.get(name)
    if attribute is None:
        return None
    text = attribute.string_value
    if attribute.data_type.startswith("Binary") or text is None:
        return []  # present, but no condition but `exists` looks at binary values
    if attribute.data_type.startswith("Number"):
        try:
            return [_comparable(float(text))]
        except ValueError:
            return []
    if attribute.data_type == "String.Array":
        try:
            items = json.loads(text) if not deeper_than(text) else None
        except ValueError:
            return [text]
        return list(_leaves(items)) if isinstance(items, list) else [text]
    return [text]


def _body_values(document: Any, keys: tuple[str, ...]) -> list[Any] | None:
    """The values at a path in a JSON document; arrays along the way (arrays of arrays too) are
    flattened. The path's names are split at dots and each step takes one or more of them, so
    `{"a": {"b.c": {"d": 1}}}`, `{"a.b": {"c.d": 1}}` and `{"a": {"b": {"c": {"d": 1}}}}` all have
    a value at a.b.c.d: AWS matches a dotted policy key against nested and dotted names alike."""
    if not isinstance(document, dict):
        return None
    names = tuple(part for key in keys for part in key.split("."))
    found: list[Any] = []
    _collect(document, names, found)
    if not found:
        return None
    values: list[Any] = []
    for node in found:
        values.extend(_leaves(node))
    return values


def _collect(node: Any, names: tuple[str, ...], found: list[Any]) -> None:
    """Append to `found` what each way of reading `names` as nested keys reaches from `node`."""
    for item in _leaves(node, keep_objects=True):
        if not isinstance(item, dict):
            continue
        for taken in range(1, len(names) + 1):
            key = ".".join(names[:taken])
            if key in item:
                if taken == len(names):
                    found.append(item[key])
                else:
                    _collect(item[key], names[taken:], found)


def _leaves(value: Any, keep_objects: bool = False) -> Any:
    """The values in a (possibly nested) array, numbers made comparable; a value that is not an
    array is its own one leaf."""
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item, keep_objects)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and not keep_objects:
        yield _comparable(float(value))
    else:
        yield value


def _comparable(number: float) -> float:
    """A number as AWS compares it: to five digits after the decimal point (100.123456789 equals
    100.1234567)."""
    return round(number, DECIMAL_DIGITS) if math.isfinite(number) else number


# --- compiling ------------------------------------------------------------------------------------
def compile_policy(text: str, scope: str = ATTRIBUTES) -> FilterPolicy:
    """Validate and compile a policy; raises BrokerError(InvalidParameter) saying what is wrong."""
    if scope not in (ATTRIBUTES, BODY):
        raise BrokerError("InvalidParameter", "Invalid parameter: FilterPolicyScope: must be MessageAttributes or MessageBody")
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise _refuse(f"a policy is at most {MAX_POLICY_BYTES} bytes")
    document = _json_object(text, "a policy", "Filter policy must be a JSON object")
    root = _conjunction(document, (), scope == BODY)
    keys = _key_count(root)
    if keys > MAX_KEYS:
        raise _refuse(f"Filter policy can not have more than {MAX_KEYS} keys")
    if _combinations(root) > MAX_COMBINATIONS:
        raise _refuse("Filter policy is too complex")
    return FilterPolicy(scope, root, text)


def compile_event_pattern(text: str) -> FilterPolicy:
    """A Lambda event filter's pattern (an event source mapping's FilterCriteria): the same grammar
    over a whole event, nested like a MessageBody policy, without SNS's limits on keys and
    combinations (Lambda bounds a pattern's length instead). Raises BrokerError."""
    document = _json_object(text, "a pattern", "a pattern must be a JSON object")
    return FilterPolicy(BODY, _conjunction(document, (), True), text)


def _json_object(text: str, what: str, not_an_object: str) -> dict:
    """A policy's or a pattern's text as the JSON object it must be; raises BrokerError saying why not."""
    if deeper_than(text):
        raise _refuse(f"{what} nests at most {MAX_JSON_DEPTH} levels deep")
    try:
        document = json.loads(text)
    except ValueError:
        raise _refuse("failed to parse JSON.") from None
    if not isinstance(document, dict):
        raise _refuse(not_an_object)
    return document


def _conjunction(document: dict, prefix: tuple[str, ...], nested: bool) -> Conjunction:
    leaves: list[Leaf] = []
    alternatives: list[list[Conjunction]] = []
    for key, value in document.items():
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2 or not all(isinstance(b, dict) and b for b in value):
                raise _refuse("$or takes a list of at least two non-empty objects")
            alternatives.append([_conjunction(branch, prefix, nested) for branch in value])
        elif isinstance(value, dict):
            if not nested:
                raise invalid_parameter("Filter policy scope MessageAttributes does not support nested filter policy")
            if not value:
                raise _refuse(f"\"{key}\": an empty object")
            nested_part = _conjunction(value, (*prefix, key), nested)
            leaves.extend(nested_part.leaves)
            alternatives.extend(nested_part.alternatives)
        elif isinstance(value, list):
            leaves.append(_leaf((*prefix, key), value))
        else:
            raise _refuse(f"\"{key}\": conditions must be given in an array")
    return Conjunction(leaves, alternatives)


def _leaf(keys: tuple[str, ...], conditions: list) -> Leaf:
    name = ".".join(keys)
    if not conditions:
        raise _refuse(f"\"{name}\": an empty array of conditions")
    predicates: list[Predicate] = []
    negated: list[Predicate] = []
    exists: bool | None = None
    for condition in conditions:
        if isinstance(condition, dict):
            if len(condition) != 1:
                raise _refuse(f"\"{name}\": each condition object has exactly one operator")
            ((operator, operand),) = condition.items()
            if operator == "exists":
                if not isinstance(operand, bool):
                    raise _refuse("exists match pattern must be either true or false.")
                exists = operand
            elif operator == "anything-but":
                negated.extend(_anything_but(name, operand))
            else:
                predicates.append(_operator(name, operator, operand))
        else:
            predicates.append(_literal(name, condition))
    if exists is not None and (predicates or negated):
        raise _refuse(f"\"{name}\": exists cannot be combined with other conditions on the same key")
    return Leaf(keys, predicates, exists, negated)


def _literal(name: str, value: Any) -> Predicate:
    if isinstance(value, str):
        return lambda v: v == value
    if isinstance(value, bool) or value is None:
        return lambda v: v is value
    if isinstance(value, (int, float)):
        number = _number(name, value)
        return lambda v: isinstance(v, float) and v == number
    raise _refuse("Match value must be String, number, true, false, or null")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _refuse(f"\"{name}\": {json.dumps(value)[:60]} is not a number")
    if abs(value) > MAX_NUMBER:
        raise _refuse(f"\"{name}\": numbers must be between -{MAX_NUMBER:.0e} and {MAX_NUMBER:.0e}")
    return _comparable(float(value))


def _string(name: str, operator: str, operand: Any) -> str:
    if not isinstance(operand, str):
        raise _refuse(f"\"{name}\": {operator} takes a string")
    return operand


def _operator(name: str, operator: str, operand: Any) -> Predicate:
    if operator == "prefix":
        prefix = _string(name, operator, operand)
        return lambda v: isinstance(v, str) and v.startswith(prefix)
    if operator == "suffix":
        suffix = _string(name, operator, operand)
        return lambda v: isinstance(v, str) and v.endswith(suffix)
    if operator == "equals-ignore-case":
        folded = _string(name, operator, operand).casefold()
        return lambda v: isinstance(v, str) and v.casefold() == folded
    if operator == "wildcard":
        pattern = _string(name, operator, operand)
        if "**" in pattern:
            raise _refuse(f"\"{name}\": consecutive wildcard characters are not allowed")
        compiled = re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)
        return lambda v: isinstance(v, str) and compiled.fullmatch(v) is not None
    if operator == "numeric":
        return _numeric(name, operand)
    if operator == "cidr":
        try:
            network = ipaddress.ip_network(_string(name, operator, operand), strict=False)
        except ValueError:
            raise _refuse(f"\"{name}\": {operand!r} is not an IP prefix") from None
        return lambda v: _in_network(v, network)
    raise _refuse(f"Unrecognized match type {operator}")


def _in_network(value: Any, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return ipaddress.ip_address(value) in network
    except ValueError:
        return False


def _numeric(name: str, operand: Any) -> Predicate:
    if not isinstance(operand, list) or len(operand) not in (2, 4):
        raise _refuse(f"\"{name}\": numeric takes [operator, number] or a range [>, n, <, m]")
    bounds = []
    for operator, value in zip(operand[::2], operand[1::2]):
        if not isinstance(operator, str) or operator not in _NUMERIC_OPERATORS:
            raise _refuse(f"\"{name}\": unrecognized numeric operator {operator!r}")
        bounds.append((operator, _number(name, value)))
    if len(bounds) == 2:
        (low_op, low), (high_op, high) = bounds
        if low_op not in (">", ">=") or high_op not in ("<", "<=") or low >= high:
            raise _refuse(f"\"{name}\": a numeric range is a lower bound (> or >=) then a higher upper bound (< or <=)")
    compare = {
        "=": lambda v, n: v == n,
        "<": lambda v, n: v < n,
        "<=": lambda v, n: v <= n,
        ">": lambda v, n: v > n,
        ">=": lambda v, n: v >= n,
    }
    checks = [(compare[op], n) for op, n in bounds]
    return lambda v: isinstance(v, float) and all(check(v, n) for check, n in checks)


def _anything_but(name: str, operand: Any) -> list[Predicate]:
    if isinstance(operand, dict):
        if len(operand) != 1 or next(iter(operand)) not in ("prefix", "suffix", "equals-ignore-case"):
            raise _refuse(f"\"{name}\": anything-but takes values, or one of prefix, suffix, equals-ignore-case")
        ((operator, inner),) = operand.items()
        return [_operator(name, operator, inner)]
    values = operand if isinstance(operand, list) else [operand]
    if not values:
        raise _refuse(f"\"{name}\": anything-but needs at least one value")
    return [_literal(name, value) for value in values]


def _key_count(conjunction: Conjunction) -> int:
    return len(conjunction.leaves) + sum(
        max(_key_count(branch) for branch in branches) for branches in conjunction.alternatives
    )


def _combinations(conjunction: Conjunction) -> int:
    """AWS's count: the product of each key's number of values, a nested key's multiplied by its
    depth (the SNS guide's payload example: 4 values three levels deep and 3 values two levels
    deep make 3 x 4 x 2 x 3 = 72)."""
    total = 1
    for leaf in conjunction.leaves:
        total *= max(1, len(leaf.predicates) + len(leaf.negated)) * len(leaf.keys)
    for branches in conjunction.alternatives:
        total *= sum(_combinations(branch) for branch in branches)
    return total


def explain(policy: FilterPolicy, attributes: Mapping[str, AnyAttribute], body: str) -> str | None:
    """Why a message does not match, in words (None when it does)."""
    message = MessageView(attributes, body)
    failure = policy.first_failure(message)
    if failure is None:
        return None
    if failure.startswith(("$or", "(")):
        return failure
    if policy.scope == BODY:
        values = _body_values(message.document(), tuple(failure.split(".")))
    else:
        values = _attribute_values(attributes, failure)
    if values is None:
        return f"key {failure!r} is missing from the message"
    shown = ", ".join(json.dumps(v) for v in values) or "(no value)"
    return f"key {failure!r}: the message's {shown} matches none of the policy's conditions"
