"""The one authorisation function (actors/authorization.py), on its own: the seeds' policy examples
do what they say, an explicit deny wins, wildcards and conditions match as IAM's, and what this
broker cannot evaluate never applies. Plain pytest and hypothesis, no broker."""

from __future__ import annotations

import fnmatch
import json
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dovecote.actors import ops
from dovecote.actors.authorization import (
    ACTIONS,
    Decision,
    PolicyError,
    action_of,
    decide,
    delivery_context,
    parse_policy,
    parse_statements,
    restored_policy,
)
from dovecote.actors.principals import ANYONE, SNS, Principal

OWNER = "123456789012"  # the seeds' account, the broker's here
OTHER = "111122223333"
STRANGER = "444455556666"
TOPIC = f"arn:aws:sns:us-west-2:{OWNER}:MySNSTopic"
QUEUE = f"arn:aws:sqs:us-west-2:{OWNER}:MyQueue"
ALLOWED, NOT_ALLOWED, DENIED = Decision.ALLOWED, Decision.NOT_ALLOWED, Decision.DENIED


def key(key_id: str, *statements: dict, account: str = "") -> Principal:
    return Principal(key_id, account, parse_statements(list(statements)))


def allow(action, resource="*", **more) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **more}


def deny(action, resource="*", **more) -> dict:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **more}


def policy(*statements: dict):
    return parse_policy(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}))


# --- the seeds' examples (shared/seeds/003: "SNS Access Control", "IAM Policies for SQS and SNS") ---
SEED_ACCOUNTS_MAY_PUBLISH = {
    "Version": "2012-10-17",
    "Id": "__default_policy_ID",
    "Statement": [
        {
            "Sid": "__default_statement_ID",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
            "Action": "SNS:Publish",
            "Resource": TOPIC,
        }
    ],
}


def test_seed_a_topic_policy_lets_one_other_account_publish():
    """The other account's key publishes (its own statements allow it, as its account's IAM must on
    AWS); a key of a third account, or one of the owner's own without permissions, does not."""
    topic_policy = parse_policy(json.dumps(SEED_ACCOUNTS_MAY_PUBLISH))
    publisher = allow("sns:Publish")
    assert decide(key("partner", publisher, account=OTHER), "sns:Publish", TOPIC, OWNER, topic_policy) is ALLOWED
    assert decide(key("partner", publisher, account=OTHER), "sns:Subscribe", TOPIC, OWNER, topic_policy) is NOT_ALLOWED
    assert decide(key("stranger", publisher, account=STRANGER), "sns:Publish", TOPIC, OWNER, topic_policy) is NOT_ALLOWED
    assert decide(key("partner-without-iam", account=OTHER), "sns:Publish", TOPIC, OWNER, topic_policy) is NOT_ALLOWED
    assert decide(key("own-without-permissions"), "sns:Publish", TOPIC, OWNER, topic_policy) is NOT_ALLOWED
    # without the topic's policy, the other account's own statements are not enough
    assert decide(key("partner", publisher, account=OTHER), "sns:Publish", TOPIC, OWNER, None) is NOT_ALLOWED


def test_seed_public_access_lets_any_key_publish():
    """The seed's "Allowing Public Access" example prints `"Principal": ""`, the asterisk lost in
    the seed's formatting: as written AWS refuses it, and so does this broker; with `*` it does
    what it says."""
    example = {
        "Version": "2012-10-17", "Id": "__default_policy_ID",
        "Statement": [{"Sid": " default statement ID", "Effect": "Allow", "Principal": "", "Action": "SNS:Publish", "Resource": TOPIC}],
    }
    with pytest.raises(PolicyError, match="Principal"):
        parse_policy(json.dumps(example))
    example["Statement"][0]["Principal"] = "*"
    public = parse_policy(json.dumps(example))
    assert decide(key("anyone-of-ours"), "sns:Publish", TOPIC, OWNER, public) is ALLOWED
    assert decide(key("anyone-of-ours"), "sns:DeleteTopic", TOPIC, OWNER, public) is NOT_ALLOWED
    assert decide(key("outsider", allow("sns:*"), account=OTHER), "sns:Publish", TOPIC, OWNER, public) is ALLOWED


def test_seed_iam_a_user_may_send_to_one_queue():
    sender = key("sender", allow("sqs:SendMessage", QUEUE))
    assert decide(sender, "sqs:SendMessage", QUEUE, OWNER) is ALLOWED
    assert decide(sender, "sqs:SendMessage", QUEUE.replace("MyQueue", "Other"), OWNER) is NOT_ALLOWED
    assert decide(sender, "sqs:ReceiveMessage", QUEUE, OWNER) is NOT_ALLOWED


def test_seed_iam_a_consumer_may_read_delete_and_get_attributes_of_one_queue():
    consumer = key("lambda", allow(["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"], QUEUE))
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        assert decide(consumer, action, QUEUE, OWNER) is ALLOWED
    for action in ("sqs:SendMessage", "sqs:PurgeQueue", "sqs:DeleteQueue", "sqs:SetQueueAttributes"):
        assert decide(consumer, action, QUEUE, OWNER) is NOT_ALLOWED
    assert decide(consumer, "sqs:ReceiveMessage", QUEUE + "-dlq", OWNER) is NOT_ALLOWED
    assert decide(consumer, "sqs:ListQueues", "*", OWNER) is NOT_ALLOWED


def test_seed_iam_a_user_may_publish_to_one_topic():
    publisher = key("publisher", allow("sns:Publish", f"arn:aws:sns:us-west-2:{OWNER}:MyTopic"))
    assert decide(publisher, "sns:Publish", f"arn:aws:sns:us-west-2:{OWNER}:MyTopic", OWNER) is ALLOWED
    assert decide(publisher, "sns:Publish", TOPIC, OWNER) is NOT_ALLOWED


@pytest.mark.parametrize(
    "statement",
    [
        {"Principal": {"Service": "sns.amazonaws.com"}, "Condition": {"ArnEquals": {"aws:SourceArn": TOPIC}}},
        {"Principal": "*", "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:sns:*:{OWNER}:MySNS*"}}},
        {"Principal": {"AWS": "*"}, "Condition": {"StringEquals": {"aws:SourceArn": TOPIC}}},
        {"Principal": {"Service": ["sns.amazonaws.com"]}, "Condition": {"ArnEquals": {"aws:SourceArn": [TOPIC, TOPIC + "2"]}}},
    ],
    ids=["service and ArnEquals", "anyone and ArnLike", "AWS * and StringEquals", "lists"],
)
def test_a_queue_policy_lets_one_topic_deliver_and_no_other(statement):
    queue_policy = policy({"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": QUEUE, **statement})
    assert decide(SNS, "sqs:SendMessage", QUEUE, OWNER, queue_policy, delivery_context(TOPIC, OWNER)) is ALLOWED
    other_topic = TOPIC.replace("MySNSTopic", "Elsewhere")
    assert decide(SNS, "sqs:SendMessage", QUEUE, OWNER, queue_policy, delivery_context(other_topic, OWNER)) is NOT_ALLOWED
    assert decide(SNS, "sqs:SendMessage", QUEUE, OWNER, None, delivery_context(TOPIC, OWNER)) is NOT_ALLOWED


def test_a_queue_policy_may_let_every_topic_of_an_account_deliver():
    queue_policy = policy(
        {"Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage", "Resource": QUEUE,
         "Condition": {"StringEquals": {"aws:SourceAccount": OWNER}}},
    )
    assert decide(SNS, "sqs:SendMessage", QUEUE, OWNER, queue_policy, delivery_context(TOPIC, OWNER)) is ALLOWED
    other = f"arn:aws:sns:us-west-2:{OTHER}:t"
    assert decide(SNS, "sqs:SendMessage", QUEUE, OWNER, queue_policy, delivery_context(other, OTHER)) is NOT_ALLOWED
    # A key is no service: the statement is not about it, and it carries no aws:SourceAccount.
    assert decide(key("k"), "sqs:SendMessage", QUEUE, OWNER, queue_policy) is NOT_ALLOWED


# --- the evaluation ------------------------------------------------------------------------------
def test_an_explicit_deny_wins_over_every_allow():
    everything = key("admin", allow("*"))
    assert decide(everything, "sqs:PurgeQueue", QUEUE, OWNER) is ALLOWED
    no_purge = policy({**deny("sqs:PurgeQueue", QUEUE), "Principal": "*"})
    assert decide(everything, "sqs:PurgeQueue", QUEUE, OWNER, no_purge) is DENIED
    assert decide(everything, "sqs:SendMessage", QUEUE, OWNER, no_purge) is ALLOWED
    self_denied = key("careful", allow("sqs:*"), deny("sqs:DeleteQueue"))
    granted = policy({**allow("sqs:*", QUEUE), "Principal": {"AWS": f"arn:aws:iam::{OWNER}:user/careful"}})
    assert decide(self_denied, "sqs:DeleteQueue", QUEUE, OWNER, granted) is DENIED
    assert decide(self_denied, "sqs:SendMessage", QUEUE, OWNER, granted) is ALLOWED


def test_a_principal_allowed_everything_is_not_asked():
    no_one = policy({**deny("*"), "Principal": "*"})
    assert decide(ANYONE, "sqs:DeleteQueue", QUEUE, OWNER, no_one) is ALLOWED
    assert decide(Principal("from-the-command-line"), "sqs:DeleteQueue", QUEUE, OWNER, no_one) is ALLOWED
    assert decide(key("restricted", allow("*")), "sqs:DeleteQueue", QUEUE, OWNER, no_one) is DENIED


def test_a_resource_policy_grants_a_key_it_names_but_only_delegates_to_an_account():
    """As on AWS: naming the key (its ARN) grants; naming its account (the root) delegates to the
    account's own permissions, which must also allow."""
    by_key = policy({**allow("sqs:ReceiveMessage", QUEUE), "Principal": {"AWS": f"arn:aws:iam::{OWNER}:user/sensor-7"}})
    assert decide(key("sensor-7"), "sqs:ReceiveMessage", QUEUE, OWNER, by_key) is ALLOWED
    assert decide(key("sensor-8"), "sqs:ReceiveMessage", QUEUE, OWNER, by_key) is NOT_ALLOWED
    assert decide(key("sensor-7", account=OTHER), "sqs:ReceiveMessage", QUEUE, OWNER, by_key) is NOT_ALLOWED
    for account in (OWNER, f"arn:aws:iam::{OWNER}:root"):
        by_account = policy({**allow("sqs:ReceiveMessage", QUEUE), "Principal": {"AWS": account}})
        assert decide(key("sensor-7"), "sqs:ReceiveMessage", QUEUE, OWNER, by_account) is NOT_ALLOWED
        assert decide(key("sensor-7", allow("sqs:Receive*")), "sqs:ReceiveMessage", QUEUE, OWNER, by_account) is ALLOWED


def test_addpermission_documents_share_with_the_accounts_they_name():
    """The Policy AddPermission writes (actors/policy.py) is evaluated like any other."""
    from dovecote.actors.policy import with_permission

    shared = parse_policy(with_permission(None, QUEUE, "share", [OTHER], ["SendMessage"]))
    partner = key("partner", allow("sqs:SendMessage"), account=OTHER)
    assert decide(partner, "sqs:SendMessage", QUEUE, OWNER, shared) is ALLOWED
    assert decide(partner, "sqs:ReceiveMessage", QUEUE, OWNER, shared) is NOT_ALLOWED


@pytest.mark.parametrize(
    "pattern, action, matches",
    [
        ("sqs:*", "sqs:SendMessage", True),
        ("SQS:sendmessage", "sqs:SendMessage", True),  # actions compare without regard to case
        ("sqs:Send*", "sqs:SendMessage", True),
        ("sqs:Send*", "sqs:ReceiveMessage", False),
        ("sqs:?eleteMessage", "sqs:DeleteMessage", True),
        ("sqs:?eleteMessage", "sqs:DeleteMessageBatch", False),
        ("*", "sns:Publish", True),
        ("sns:*", "sqs:SendMessage", False),
        ("sqs:*Message*", "sqs:ChangeMessageVisibility", True),
    ],
)
def test_action_wildcards(pattern, action, matches):
    assert (decide(key("k", allow(pattern)), action, QUEUE, OWNER) is ALLOWED) is matches


@pytest.mark.parametrize(
    "pattern, resource, matches",
    [
        ("arn:aws:sqs:*:*:orders-*", f"arn:aws:sqs:eu-west-1:{OWNER}:orders-eu", True),
        ("arn:aws:sqs:*:*:orders-*", f"arn:aws:sqs:eu-west-1:{OWNER}:Orders-eu", False),  # resources keep their case
        (f"arn:aws:sqs:us-west-2:{OWNER}:queue-?", f"arn:aws:sqs:us-west-2:{OWNER}:queue-7", True),
        (f"arn:aws:sqs:us-west-2:{OWNER}:queue-?", f"arn:aws:sqs:us-west-2:{OWNER}:queue-77", False),
        ("*", "*", True),
        ("arn:aws:sqs:*", "*", False),  # ListQueues is on "*": only Resource "*" covers it, as on AWS
    ],
)
def test_resource_wildcards(pattern, resource, matches):
    assert (decide(key("k", allow("sqs:*", pattern)), "sqs:SendMessage", resource, OWNER) is ALLOWED) is matches


def test_not_action_and_not_resource():
    all_but_delete = key("k", {"Effect": "Allow", "NotAction": ["sqs:DeleteQueue", "sqs:Purge*"], "Resource": "*"})
    assert decide(all_but_delete, "sqs:SendMessage", QUEUE, OWNER) is ALLOWED
    assert decide(all_but_delete, "sqs:PurgeQueue", QUEUE, OWNER) is NOT_ALLOWED
    elsewhere = key("k", {"Effect": "Allow", "Action": "sqs:*", "NotResource": QUEUE})
    assert decide(elsewhere, "sqs:SendMessage", QUEUE + "2", OWNER) is ALLOWED
    assert decide(elsewhere, "sqs:SendMessage", QUEUE, OWNER) is NOT_ALLOWED


def context(source_arn=None, account=None) -> dict[str, str]:
    values = {"aws:sourcearn": source_arn, "aws:sourceaccount": account}
    return {name: value for name, value in values.items() if value is not None}


@pytest.mark.parametrize(
    "condition, request_context, holds",
    [
        ({"StringEquals": {"aws:SourceAccount": OWNER}}, context(account=OWNER), True),
        ({"StringEquals": {"aws:SourceAccount": [OTHER, OWNER]}}, context(account=OWNER), True),
        ({"StringEquals": {"aws:SourceAccount": int(OWNER)}}, context(account=OWNER), True),  # a number, as IAM takes it
        ({"StringEquals": {"aws:SourceAccount": OWNER}}, context(account=OTHER), False),
        ({"StringEquals": {"aws:SourceAccount": OWNER}}, context(), False),  # a key the request does not carry
        ({"StringEqualsIfExists": {"aws:SourceAccount": OWNER}}, context(), True),
        ({"StringEqualsIfExists": {"aws:SourceAccount": OWNER}}, context(account=OTHER), False),
        ({"StringNotEquals": {"aws:SourceAccount": OWNER}}, context(account=OTHER), True),
        ({"StringNotEquals": {"aws:SourceAccount": OWNER}}, context(), True),
        ({"StringLike": {"aws:SourceArn": "arn:aws:sns:*:*:My*"}}, context(TOPIC), True),
        ({"StringNotLike": {"aws:SourceArn": "arn:aws:sns:*:*:My*"}}, context(TOPIC), False),
        ({"ArnEquals": {"aws:SourceArn": TOPIC}}, context(TOPIC), True),
        ({"ArnLike": {"aws:SourceArn": "arn:aws:sns:us-west-?:*:*"}}, context(TOPIC), True),
        ({"ArnLike": {"aws:SourceArn": "arn:aws:sns:*"}}, context(TOPIC), False),  # six components, each matched
        ({"ArnNotEquals": {"aws:SourceArn": TOPIC}}, context(TOPIC), False),
        ({"ArnNotLike": {"aws:SourceArn": "arn:aws:sns:*:*:Other"}}, context(TOPIC), True),
        ({"ForAnyValue:StringEquals": {"aws:SourceAccount": [OWNER]}}, context(account=OWNER), True),
        ({"StringEquals": {"AWS:SOURCEACCOUNT": OWNER}}, context(account=OWNER), True),  # keys without regard to case
        ({"ArnEquals": {"aws:SourceArn": TOPIC}, "StringEquals": {"aws:SourceAccount": OTHER}}, context(TOPIC, OWNER), False),
    ],
)
def test_conditions(condition, request_context, holds):
    statement = {"Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage", "Condition": condition}
    assert (decide(SNS, "sqs:SendMessage", QUEUE, OWNER, policy(statement), request_context) is ALLOWED) is holds


@pytest.mark.parametrize(
    "condition",
    [
        {"NumericLessThan": {"aws:SourceAccount": 5}},  # an operator this broker does not evaluate
        {"Bool": {"aws:SecureTransport": False}},
        {"StringEquals": {"aws:SourceIp": "10.0.0.1"}},  # a key no request here carries a value for
        {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}},
    ],
)
def test_a_statement_with_an_unknown_operator_or_key_never_applies(condition):
    """Neither its Allow nor its Deny: it cannot be evaluated here (and the policy is accepted)."""
    granted = policy({**allow("sqs:SendMessage", QUEUE), "Principal": "*", "Condition": condition})
    assert decide(key("k"), "sqs:SendMessage", QUEUE, OWNER, granted) is NOT_ALLOWED
    refused = policy({**deny("sqs:SendMessage", QUEUE), "Principal": "*", "Condition": condition})
    assert decide(key("k", allow("*")), "sqs:SendMessage", QUEUE, OWNER, refused) is ALLOWED


def test_a_stored_policy_that_no_longer_parses_fails_closed():
    broken = restored_policy('{"Statement": [{"Effect": "Perhaps"}]}')
    assert broken is not None and broken.broken
    assert decide(key("k", allow("*")), "sqs:SendMessage", QUEUE, OWNER, broken) is DENIED
    assert decide(ANYONE, "sqs:SendMessage", QUEUE, OWNER, broken) is ALLOWED
    assert restored_policy("") is None and restored_policy(None) is None


@pytest.mark.parametrize(
    "document, complaint",
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"Version": "2012-10-17"}', "no Statement"),
        ('{"Version": "2020-01-01", "Statement": []}', "Version"),
        ('{"Statement": [], "Extra": 1}', "unknown policy element"),
        ('{"Statement": [{"Effect": "Permit", "Principal": "*", "Action": "sqs:*"}]}', "Effect"),
        ('{"Statement": [{"Effect": "Allow", "Principal": "*"}]}', "Action"),
        ('{"Statement": [{"Effect": "Allow", "Action": "sqs:*"}]}', "Principal"),
        ('{"Statement": [{"Effect": "Allow", "NotPrincipal": "*", "Action": "sqs:*"}]}', "NotPrincipal"),
        ('{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "SendMessage"}]}', "service"),
        ('{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sqs:*", "Actions": "x"}]}', "unknown statement element"),
        ('{"Statement": [{"Effect": "Allow", "Principal": {"AWS": "bob"}, "Action": "sqs:*"}]}', "Invalid principal"),
        ('{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sqs:*", "Resource": 7}]}', "Resource"),
        ('{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sqs:*", "Condition": []}]}', "Condition"),
        ('{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": [], "Resource": "*"}]}', "at least one"),
    ],
)
def test_malformed_policies_are_refused_saying_why(document, complaint):
    with pytest.raises(PolicyError, match=complaint):
        parse_policy(document)


def test_a_keys_statements_name_no_principal_and_must_name_resources():
    with pytest.raises(PolicyError, match="statement 2: .*no Principal"):
        parse_statements([allow("sqs:*"), {**allow("sqs:*"), "Principal": "*"}])
    with pytest.raises(PolicyError, match="Resource"):
        parse_statements([{"Effect": "Allow", "Action": "sqs:*"}])
    assert parse_statements({"effect": "Allow", "action": "sqs:*", "resource": "*"}).statements  # element names in any case


def test_a_single_statement_object_and_the_2008_version_are_accepted():
    document = {"Version": "2008-10-17", "Statement": {**allow("sqs:SendMessage"), "Principal": "*"}}
    assert decide(key("k"), "sqs:SendMessage", QUEUE, OWNER, parse_policy(json.dumps(document))) is ALLOWED


def test_every_operation_has_an_iam_action():
    assert set(ACTIONS) == set(typing.get_args(ops.AnyOp))
    assert {action.split(":")[0] for action in ACTIONS.values()} == {"sqs", "sns"}
    assert action_of(ops.SendMessageBatch("q", [])) == "sqs:SendMessage"  # a batch is its single action, as on AWS


# --- properties ----------------------------------------------------------------------------------
WORDS = st.text(alphabet="abcSMQdeg:-*?", min_size=1, max_size=12)
SOME_ACTIONS = st.sampled_from(["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sns:Publish", "sns:Subscribe"])


@given(pattern=WORDS, action=st.text(alphabet="abcSMQdeg:-", max_size=12))
def test_action_patterns_match_as_shell_wildcards_do_without_regard_to_case(pattern, action):
    matched = decide(key("k", allow("x:" + pattern)), "x:" + action, QUEUE, OWNER) is ALLOWED
    assert matched == fnmatch.fnmatchcase(action.lower(), pattern.lower())


STATEMENTS = st.builds(
    lambda effect, action, resource: {"Effect": effect, "Action": action, "Resource": resource},
    st.sampled_from(["Allow", "Deny"]),
    st.sampled_from(["sqs:*", "sqs:Send*", "sqs:ReceiveMessage", "sns:Publish", "*", "sns:*"]),
    st.sampled_from(["*", QUEUE, TOPIC, "arn:aws:sqs:*:*:My*"]),
)
RESOURCE_STATEMENTS = st.builds(
    lambda statement, principal: {**statement, "Principal": principal},
    STATEMENTS,
    st.sampled_from(["*", {"AWS": OWNER}, {"AWS": f"arn:aws:iam::{OWNER}:user/k"}, {"Service": "sns.amazonaws.com"}]),
)


@given(
    own=st.lists(STATEMENTS, max_size=4), attached=st.lists(RESOURCE_STATEMENTS, max_size=4),
    action=SOME_ACTIONS, resource=st.sampled_from([QUEUE, TOPIC]), extra=RESOURCE_STATEMENTS,
)
def test_adding_a_deny_never_allows_more_and_adding_an_allow_never_allows_less(own, attached, action, resource, extra):
    principal = key("k", *own)
    before = decide(principal, action, resource, OWNER, policy(*attached))
    after = decide(principal, action, resource, OWNER, policy(*attached, extra))
    if extra["Effect"] == "Deny":
        assert not (after is ALLOWED and before is not ALLOWED)
    else:
        assert not (before is ALLOWED and after is not ALLOWED)
        assert not (before is DENIED and after is not DENIED)  # an explicit deny stays
    if before is DENIED:
        assert after is DENIED
