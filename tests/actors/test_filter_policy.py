"""Filter policies: the grammar by example tables, its limits, and matching against a plain
reference with hypothesis."""

import json

import pytest
from hypothesis import given, strategies as st

from dovecote.actors.errors import BrokerError
from dovecote.actors.filter_policy import BODY, compile_policy, explain
from dovecote.storage.records import MessageAttribute


def s(value):
    return MessageAttribute("String", value)


def n(value):
    return MessageAttribute("Number", str(value))


def array(*values):
    return MessageAttribute("String.Array", json.dumps(list(values)))


ATTRIBUTE_CASES = [
    # policy, attributes, matches
    ({"colour": ["red"]}, {"colour": s("red")}, True),
    ({"colour": ["red"]}, {"colour": s("Red")}, False),
    ({"colour": ["red", "blue"]}, {"colour": s("blue")}, True),
    ({"colour": ["red"]}, {}, False),
    ({"size": [5]}, {"size": n(5.0)}, True),
    ({"size": [5]}, {"size": s("5")}, False),
    ({"colour": [{"prefix": "re"}]}, {"colour": s("red")}, True),
    ({"colour": [{"suffix": "ue"}]}, {"colour": s("blue")}, True),
    ({"colour": [{"equals-ignore-case": "RED"}]}, {"colour": s("rEd")}, True),
    ({"file": [{"wildcard": "*.png"}]}, {"file": s("a/b.png")}, True),
    ({"file": [{"wildcard": "img-*-x.png"}]}, {"file": s("img-1-y.png")}, False),
    ({"colour": [{"anything-but": "red"}]}, {"colour": s("blue")}, True),
    ({"colour": [{"anything-but": ["red", "blue"]}]}, {"colour": s("blue")}, False),
    ({"colour": [{"anything-but": "red"}]}, {}, False),  # anything-but needs the key
    ({"colour": [{"anything-but": {"prefix": "bl"}}]}, {"colour": s("black")}, False),
    ({"colour": [{"anything-but": {"suffix": "ck"}}]}, {"colour": s("red")}, True),
    ({"price": [{"numeric": [">", 10]}]}, {"price": n(10.5)}, True),
    ({"price": [{"numeric": [">", 10]}]}, {"price": n(10)}, False),
    ({"price": [{"numeric": [">=", 0, "<", 100]}]}, {"price": n(0)}, True),
    ({"price": [{"numeric": [">=", 0, "<", 100]}]}, {"price": n(100)}, False),
    ({"price": [{"numeric": ["=", 3.5]}]}, {"price": n("3.50")}, True),
    ({"price": [{"numeric": ["<", 0]}]}, {"price": s("-5")}, False),  # a String is not a number
    ({"colour": [{"exists": True}]}, {"colour": s("x")}, True),
    ({"colour": [{"exists": True}]}, {}, False),
    ({"colour": [{"exists": False}]}, {}, True),
    ({"colour": [{"exists": False}]}, {"colour": s("x")}, False),
    ({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": s("10.0.0.77")}, True),
    ({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": s("10.0.1.1")}, False),
    ({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": s("2001:db8::1")}, True),
    ({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": s("not an address")}, False),
    ({"tags": ["b"]}, {"tags": array("a", "b")}, True),
    ({"tags": ["c"]}, {"tags": array("a", "b")}, False),
    ({"tags": [7]}, {"tags": array(1, 7)}, True),
    ({"colour": ["red"], "size": ["L"]}, {"colour": s("red"), "size": s("M")}, False),
    ({"colour": ["red"], "size": ["L"]}, {"colour": s("red"), "size": s("L")}, True),
    ({"$or": [{"colour": ["red"]}, {"size": ["L"]}]}, {"size": s("L")}, True),
    ({"$or": [{"colour": ["red"]}, {"size": ["L"]}]}, {"size": s("M")}, False),
    ({"kind": ["a"], "$or": [{"x": [1]}, {"y": [2]}]}, {"kind": s("a"), "y": n(2)}, True),
    ({"kind": ["a"], "$or": [{"x": [1]}, {"y": [2]}]}, {"kind": s("b"), "y": n(2)}, False),
]


@pytest.mark.parametrize("policy, attributes, expected", ATTRIBUTE_CASES)
def test_attribute_policies(policy, attributes, expected):
    assert compile_policy(json.dumps(policy)).matches(attributes, "body") is expected


BODY_CASES = [
    ({"order": {"status": ["paid"]}}, {"order": {"status": "paid"}}, True),
    ({"order": {"status": ["paid"]}}, {"order": {"status": "open"}}, False),
    ({"order": {"status": ["paid"]}}, {"status": "paid"}, False),
    ({"items": {"sku": [{"prefix": "A-"}]}}, {"items": [{"sku": "B-1"}, {"sku": "A-2"}]}, True),
    ({"tags": ["x"]}, {"tags": ["w", "x"]}, True),
    ({"flag": [True]}, {"flag": True}, True),
    ({"flag": [True]}, {"flag": "true"}, False),
    ({"gone": [None]}, {"gone": None}, True),
    ({"total": [{"numeric": [">", 99]}]}, {"total": 100}, True),
    ({"a": {"b": [{"exists": False}]}}, {"a": {"c": 1}}, True),
    ({"a": {"b": [{"exists": True}]}}, {"a": {"b": None}}, True),
    ({"$or": [{"a": [1]}, {"b": {"c": ["x"]}}]}, {"b": {"c": "x"}}, True),
]


@pytest.mark.parametrize("policy, body, expected", BODY_CASES)
def test_body_policies(policy, body, expected):
    assert compile_policy(json.dumps(policy), BODY).matches({}, json.dumps(body)) is expected


def test_a_body_policy_on_a_body_that_is_not_json_does_not_match():
    policy = compile_policy('{"a": ["b"]}', BODY)
    assert not policy.matches({}, "plain text")
    assert explain(policy, {}, "plain text") == "(the message body is not JSON)"


@pytest.mark.parametrize(
    "policy, scope, reason",
    [
        ("not json", "MessageAttributes", "not valid JSON"),
        ("[]", "MessageAttributes", "non-empty JSON object"),
        ('{"a": "red"}', "MessageAttributes", "in an array"),
        ('{"a": []}', "MessageAttributes", "empty array"),
        ('{"a": {"b": ["c"]}}', "MessageAttributes", "nested keys need"),
        ('{"a": [{"prefix": 5}]}', "MessageAttributes", "prefix takes a string"),
        ('{"a": [{"numeric": [">", "x"]}]}', "MessageAttributes", "not a number"),
        ('{"a": [{"numeric": ["<", 5, ">", 1]}]}', "MessageAttributes", "numeric range"),
        ('{"a": [{"numeric": ["~", 5]}]}', "MessageAttributes", "numeric operator"),
        # found by atheris: an operator that is not a string was looked up in a set (TypeError, a 500)
        ('{"a": [{"numeric": [{}, {}, ">", 5]}]}', "MessageAttributes", "numeric operator"),
        ('{"a": [{"numeric": [[">"], 5]}]}', "MessageAttributes", "numeric operator"),
        ('{"a": [{"numeric": [">", 1e10]}]}', "MessageAttributes", "between"),
        ('{"a": [{"cidr": "10.0.0.0/99"}]}', "MessageAttributes", "IP prefix"),
        ('{"a": [{"sorta": 1}]}', "MessageAttributes", "unrecognized match type"),
        ('{"a": [{"exists": "yes"}]}', "MessageAttributes", "true or false"),
        ('{"a": [{"exists": true}, "x"]}', "MessageAttributes", "cannot be combined"),
        ('{"a": [{"anything-but": []}]}', "MessageAttributes", "at least one value"),
        ('{"$or": [{"a": ["x"]}]}', "MessageAttributes", "at least two"),
        ('{"a":["x"],"b":["x"],"c":["x"],"d":["x"],"e":["x"],"f":["x"]}', "MessageAttributes", "at most 5 keys"),
        (json.dumps({k: list(range(6)) for k in "abc"}), "MessageAttributes", "combinations"),
        ('{"a": ["x"]}', "Elsewhere", "FilterPolicyScope"),
        ('{"a": [{"wildcard": "a**"}]}', "MessageAttributes", "consecutive wildcard"),
    ],
)
def test_invalid_policies_are_refused_with_the_reason(policy, scope, reason):
    with pytest.raises(BrokerError) as error:
        compile_policy(policy, scope)
    assert error.value.code == "InvalidParameter"
    assert reason in error.value.message


def test_explain_names_the_key_that_failed():
    policy = compile_policy('{"colour": ["red"], "size": [{"numeric": [">", 3]}]}')
    assert explain(policy, {"colour": s("red"), "size": n(5)}, "") is None
    assert explain(policy, {"colour": s("red")}, "") == "key 'size' is missing from the message"
    assert explain(policy, {"colour": s("blue"), "size": n(5)}, "") == (
        "key 'colour': the message's \"blue\" matches none of the policy's conditions"
    )


values = st.one_of(st.sampled_from(["red", "green", "blue", "re", "ed"]), st.integers(-3, 3))


@given(
    policy=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.lists(values, min_size=1, max_size=3), min_size=1),
    message=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), values),
)
def test_exact_values_match_as_a_plain_reference_says(policy, message):
    """Every key must be present with one of its listed values (strings as Strings, numbers as
    Numbers)."""
    attributes = {k: n(v) if isinstance(v, int) else s(v) for k, v in message.items()}
    expected = all(
        key in message
        and any(type(message[key]) is type(option) and message[key] == option for option in options)
        for key, options in policy.items()
    )
    assert compile_policy(json.dumps(policy)).matches(attributes, "") is expected
