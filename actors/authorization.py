"""Who may do what: IAM-style statements, queue and topic policies, and the one function that
decides. Pure.

Theory of operation
-------------------
A request, as authorisation sees it, is a principal (principals.py: a key, ANYONE, or the SNS
service delivering a topic's message into a queue), an action named as AWS names it
(`sqs:SendMessage`, `sns:Publish`; `action_of` names every operation of ops.py, the native
protocol's own included), a resource (a queue's or topic's ARN; `*` for the listings, which AWS
does not narrow to a resource either) with the account that owns it, and condition keys (only a
topic's delivery carries any: aws:SourceArn, aws:SourceAccount and aws:SourceOwner).

Two policies speak about it: the principal's own statements (its identity policy: a key's
statements in the configuration file) and the resource's `Policy` attribute (a resource policy,
whose statements also say which principals they are about). `decide` evaluates them as IAM does:

1. A principal allowed everything (a key given with --access-key, and ANYONE when authentication
   is off) is allowed, without looking further.
2. A statement applies when its Action (or NotAction), its Resource (or NotResource), its
   Principal (resource policies only) and every one of its Conditions match the request. An
   applicable Deny, in either policy, refuses: an explicit deny wins over every allow.
3. A principal of the resource's own account is allowed by an applicable Allow among its own
   statements, or by one in the resource policy that names the principal itself (its key's ARN,
   `arn:aws:iam::ACCOUNT:user/KEY_ID`, or `*`, or the service). A resource statement that names
   only an account (`"123456789012"`, `arn:aws:iam::123456789012:root`) delegates to that account,
   as on AWS: it grants nothing by itself, the principal's own statements must allow too.
4. A principal of another account (a key configured with an `account` of its own) needs both: its
   own statements, and the resource policy naming it or its account (AWS's cross-account rule).
5. Anything else is refused (the implicit deny).

Matching: actions case-insensitively, with the wildcards `*` and `?` (`sqs:*`, `SQS:Send*`, `*`);
resources case-sensitively with the same wildcards (`arn:aws:sqs:*:*:orders-*`). Condition
operators: StringEquals, StringNotEquals, StringLike, StringNotLike, ArnEquals, ArnLike,
ArnNotEquals, ArnNotLike (ARNs matched component by component, each with wildcards, as IAM does),
each also as ...IfExists and with ForAnyValue: (the keys here are single-valued, so ForAnyValue is
the plain operator). Several values of one key: any may match; several keys or operators: all must.
A key the request does not carry fails the positive operators and satisfies the negative ones and
the IfExists forms, as on AWS. An operator or a key this broker does not know makes its statement
never apply, neither its Allow nor its Deny: it cannot be evaluated here (a policy written for AWS
may name keys of services this broker does not have), and guessing would be worse.

Policies are parsed once, into the objects below, when set (a malformed one is refused, as AWS
refuses it) and when restored from the store. A stored policy that no longer parses (one written
before policies were checked) refuses every request of a restricted principal: a broken policy
fails closed. Queue and topic actors own their policies and publish the parsed one in a PolicySlot
of their directory entry, where sessions and topics (delivering into a queue) read it.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import ops

if TYPE_CHECKING:
    from .principals import Principal

VERSIONS = ("2008-10-17", "2012-10-17")
SNS_SERVICE = "sns.amazonaws.com"
ANY_RESOURCE = "*"  # the resource of requests no resource narrows (the listings, as on AWS)
NO_CONTEXT: Mapping[str, str] = {}
# The condition keys a request here can carry, lower-cased (IAM's key names are case-insensitive).
KNOWN_KEYS = frozenset({"aws:sourcearn", "aws:sourceaccount", "aws:sourceowner"})
_ACCOUNT = re.compile(r"\d{12}")
_IAM_ARN = re.compile(r"arn:aws:iam::(\d{12}):(.+)")


class PolicyError(ValueError):
    """A policy or statement that cannot be used: the message says what is wrong."""


class Decision(enum.Enum):
    ALLOWED = "allowed"
    NOT_ALLOWED = "not allowed"  # no applicable Allow: the implicit deny
    DENIED = "explicitly denied"  # an applicable Deny


# --- matching ------------------------------------------------------------------------------------
def _glob(pattern: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


def _matcher(patterns: Iterable[str], ignore_case: bool) -> re.Pattern[str] | None:
    """One regular expression for a list of wildcard patterns; None when one of them is `*`
    (everything matches)."""
    patterns = list(patterns)
    if "*" in patterns:
        return None
    return re.compile("|".join(f"(?:{_glob(p)})" for p in patterns), re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


class _Arn:
    """An ARN pattern, matched component by component (ArnEquals and ArnLike, as IAM has them)."""

    __slots__ = ("components",)

    def __init__(self, pattern: str) -> None:
        parts = pattern.split(":", 5)
        self.components = [re.compile(_glob(part), re.DOTALL) for part in parts] if len(parts) == 6 else None

    def matches(self, value: str) -> bool:
        parts = value.split(":", 5)
        if self.components is None or len(parts) != 6:
            return False
        return all(component.fullmatch(part) for component, part in zip(self.components, parts))


class _Condition:
    """One operator on one key, with its values."""

    __slots__ = ("key", "kind", "negative", "if_exists", "values", "patterns")

    def __init__(self, operator: str, key: str, values: list[str]) -> None:
        self.key = key.lower()
        name = operator
        if name.startswith("ForAnyValue:"):
            name = name[len("ForAnyValue:") :]
        self.if_exists = name.endswith("IfExists")
        if self.if_exists:
            name = name[: -len("IfExists")]
        self.negative = "Not" in name
        self.kind = name.replace("Not", "")
        self.values = frozenset(values)
        self.patterns: list[Any] = []
        if self.kind == "StringLike":
            matcher = _matcher(values, ignore_case=False)
            self.patterns = [matcher]
        elif self.kind in ("ArnEquals", "ArnLike"):
            self.patterns = [_Arn(value) for value in values]

    def holds(self, context: Mapping[str, str]) -> bool:
        value = context.get(self.key)
        if value is None:
            return self.if_exists or self.negative
        if self.kind == "StringEquals":
            matched = value in self.values
        elif self.kind == "StringLike":
            matched = self.patterns[0] is None or self.patterns[0].fullmatch(value) is not None
        else:
            matched = any(arn.matches(value) for arn in self.patterns)
        return matched != self.negative


_OPERATORS = frozenset(
    f"{prefix}{kind}{suffix}"
    for prefix in ("", "ForAnyValue:")
    for kind in ("StringEquals", "StringNotEquals", "StringLike", "StringNotLike", "ArnEquals", "ArnLike", "ArnNotEquals", "ArnNotLike")
    for suffix in ("", "IfExists")
)


# --- principals a resource policy names ----------------------------------------------------------
class _Principals:
    """The Principal element of a resource policy's statement."""

    __slots__ = ("anyone", "accounts", "keys", "services")

    def __init__(self, element: object) -> None:
        self.anyone = False
        self.accounts: set[str] = set()  # delegations to whole accounts
        self.keys: set[tuple[str, str]] = set()  # (account, key id)
        self.services: set[str] = set()
        if element == "*":
            self.anyone = True
            return
        if not isinstance(element, dict) or not element:
            raise PolicyError(f"Principal must be \"*\" or an object such as {{\"AWS\": ...}}, not {json.dumps(element)[:80]}")
        for kind, names in element.items():
            for name in _strings(names, f"Principal {kind}"):
                if kind == "AWS":
                    self._aws(name)
                elif kind == "Service":
                    self.services.add(name.lower())
                # Federated and CanonicalUser principals exist on AWS, never here: they match nothing.

    def _aws(self, name: str) -> None:
        if name == "*":
            self.anyone = True
        elif _ACCOUNT.fullmatch(name):
            self.accounts.add(name)
        elif (arn := _IAM_ARN.fullmatch(name)) is not None:
            account, rest = arn.groups()
            if rest == "root":
                self.accounts.add(account)
            elif rest.startswith("user/"):
                self.keys.add((account, rest[len("user/") :]))
            # roles and other IAM principals: this broker has none, they match nothing
        else:
            raise PolicyError(f"Invalid principal in policy: {name[:80]!r} is neither *, an account id nor an IAM ARN")

    def names(self, principal: Principal, account: str) -> bool:
        """Whether the statement names this principal itself (not only its account)."""
        if self.anyone:
            return True
        if principal.service:
            return principal.service in self.services
        return (account, principal.key_id) in self.keys

    def names_account(self, principal: Principal, account: str) -> bool:
        return not principal.service and account in self.accounts


# --- statements ----------------------------------------------------------------------------------
_ELEMENTS = {
    name.lower(): name
    for name in ("Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition", "Principal", "NotPrincipal")
}


class Statement:
    """One parsed statement: its effect, and what it applies to."""

    __slots__ = ("allow", "actions", "not_action", "resources", "not_resource", "principals", "conditions", "evaluable", "sid")

    def __init__(self, element: object, *, resource_policy: bool) -> None:
        if not isinstance(element, dict):
            raise PolicyError("each statement must be an object")
        fields: dict[str, object] = {}
        for name, value in element.items():
            canonical = _ELEMENTS.get(str(name).lower())
            if canonical is None:
                raise PolicyError(f"unknown statement element {str(name)[:40]!r}")
            fields[canonical] = value
        self.sid = str(fields.get("Sid", ""))
        effect = fields.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise PolicyError(f"Effect must be Allow or Deny, not {json.dumps(effect)[:40]}")
        self.allow = effect == "Allow"
        self.actions, self.not_action = self._either(fields, "Action", "NotAction", required=True, ignore_case=True)
        for action in _strings(fields.get("Action", fields.get("NotAction")), "Action"):
            if action != "*" and ":" not in action:
                raise PolicyError(f"Action {action[:60]!r} must name its service, as sqs:SendMessage or sns:Publish")
        # A resource policy's statement without a Resource is about the resource it is attached to.
        self.resources, self.not_resource = self._either(fields, "Resource", "NotResource", required=not resource_policy, ignore_case=False)
        if "NotPrincipal" in fields:
            raise PolicyError("NotPrincipal is not supported by this broker")
        if resource_policy:
            if "Principal" not in fields:
                raise PolicyError("each statement of a queue's or topic's policy must have a Principal")
            self.principals: _Principals | None = _Principals(fields["Principal"])
        else:
            if "Principal" in fields:
                raise PolicyError("a key's own statements have no Principal: they are about the key")
            self.principals = None
        self.conditions: list[_Condition] = []
        self.evaluable = True  # False: an operator or key unknown here; the statement never applies
        condition = fields.get("Condition", {})
        if not isinstance(condition, dict):
            raise PolicyError("Condition must be an object of operators")
        for operator, keys in condition.items():
            if not isinstance(keys, dict):
                raise PolicyError(f"Condition {str(operator)[:40]} must be an object of keys and values")
            for key, values in keys.items():
                if operator not in _OPERATORS or str(key).lower() not in KNOWN_KEYS:
                    self.evaluable = False  # its values are another operator's business (Bool takes true)
                    continue
                self.conditions.append(_Condition(operator, str(key), _strings(values, f"Condition {operator} {key}", numbers=True)))

    @staticmethod
    def _either(
        fields: dict[str, object], name: str, negated: str, *, required: bool, ignore_case: bool
    ) -> tuple[re.Pattern[str] | None, bool]:
        if name in fields and negated in fields:
            raise PolicyError(f"a statement has {name} or {negated}, not both")
        if name not in fields and negated not in fields:
            if required:
                raise PolicyError(f"each statement must have {name} (or {negated})")
            return None, False
        key = name if name in fields else negated
        patterns = _strings(fields[key], key)
        if not patterns:
            raise PolicyError(f"{key} must name at least one value")
        return _matcher(patterns, ignore_case), key == negated

    def applies(self, action: str, resource: str, context: Mapping[str, str]) -> bool:
        """Whether Action, Resource and Condition match (the Principal is the caller's to check)."""
        if not self.evaluable:
            return False
        matched = self.actions is None or self.actions.fullmatch(action) is not None
        if matched == self.not_action:
            return False
        matched = self.resources is None or self.resources.fullmatch(resource) is not None
        if matched == self.not_resource:
            return False
        return all(condition.holds(context) for condition in self.conditions)


def _strings(value: object, what: str, *, numbers: bool = False) -> list[str]:
    """A string or a list of strings (numbers too, for condition values, as IAM takes them)."""
    items = value if isinstance(value, list) else [value]
    texts = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        elif numbers and isinstance(item, int | float) and not isinstance(item, bool):
            texts.append(str(item))
        else:
            raise PolicyError(f"{what} must be a string or a list of strings")
    return texts


class Permissions:
    """A principal's own statements (its identity policy). Compared and hashed by identity: the
    keyring makes each key's once."""

    __slots__ = ("statements",)

    def __init__(self, statements: Iterable[Statement]) -> None:
        self.statements = tuple(statements)

    def __repr__(self) -> str:
        return f"Permissions({len(self.statements)} statements)"


def parse_statements(elements: object) -> Permissions:
    """A key's own statements, from the configuration file (a list of IAM statement objects, or
    one). Raises PolicyError naming the statement that is wrong."""
    items = elements if isinstance(elements, list) else [elements]
    statements = []
    for number, element in enumerate(items, 1):
        try:
            statements.append(Statement(element, resource_policy=False))
        except PolicyError as error:
            raise PolicyError(f"statement {number}: {error}") from None
    return Permissions(statements)


# --- resource policies ---------------------------------------------------------------------------
class Policy:
    """A queue's or topic's parsed Policy attribute."""

    __slots__ = ("statements", "broken")

    def __init__(self, statements: Iterable[Statement], broken: bool = False) -> None:
        self.statements = tuple(statements)
        self.broken = broken  # a stored policy that does not parse: refuses every restricted principal


@functools.lru_cache(maxsize=256)
def parse_policy(text: str) -> Policy:
    """A resource policy from its JSON text; the same text gives the same (immutable) object, so
    ten thousand queues restored with one policy share it. Raises PolicyError saying what is wrong."""
    try:
        document = json.loads(text)
    except ValueError:
        raise PolicyError("the policy is not JSON") from None
    if not isinstance(document, dict):
        raise PolicyError("the policy must be a JSON object")
    unknown = set(document) - {"Version", "Id", "Statement"}
    if unknown:
        raise PolicyError(f"unknown policy element {sorted(unknown)[0][:40]!r}")
    if document.get("Version", VERSIONS[-1]) not in VERSIONS:
        raise PolicyError(f"Version must be one of {', '.join(VERSIONS)}")
    if "Statement" not in document:
        raise PolicyError("the policy has no Statement")
    elements = document["Statement"]
    statements = []
    for number, element in enumerate(elements if isinstance(elements, list) else [elements], 1):
        try:
            statements.append(Statement(element, resource_policy=True))
        except PolicyError as error:
            raise PolicyError(f"statement {number}: {error}") from None
    return Policy(statements)


def restored_policy(text: str | None) -> Policy | None:
    """A stored Policy attribute, parsed; one that does not parse fails closed (see above)."""
    if not text:
        return None
    try:
        return parse_policy(text)
    except PolicyError:
        return Policy((), broken=True)


class PolicySlot:
    """Where a queue's or topic's actor publishes its parsed policy, for those who decide about the
    resource outside the actor (a session routing a request to it, a topic delivering into it).
    Written by the actor's core alone, read by anyone on the event loop's thread."""

    __slots__ = ("policy",)

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy


class OwnPolicy:
    """A queue's or topic's Policy as its core keeps it: parsed when its text changes (set, or
    restored), and published in a slot, the directory entry's once the core is running."""

    __slots__ = ("text", "slot")

    def __init__(self) -> None:
        self.text: str | None = None
        self.slot = PolicySlot()

    def update(self, text: str | None) -> None:
        if text != self.text:
            self.text = text
            self.slot.policy = restored_policy(text)

    def share(self, slot: PolicySlot) -> None:
        slot.policy = self.slot.policy
        self.slot = slot


# --- the decision --------------------------------------------------------------------------------
def decide(
    principal: Principal,
    action: str,
    resource: str,
    owner: str,
    policy: Policy | None = None,
    context: Mapping[str, str] = NO_CONTEXT,
) -> Decision:
    """Whether `principal` may do `action` on `resource` (an ARN, or `*`), which belongs to the
    account `owner` and has the resource policy `policy` (None: none), given the condition keys of
    `context` (lower-case names). The one decision every door and actor asks; the theory of
    operation above says how it is reached."""
    permissions = principal.permissions
    if permissions is None:
        return Decision.ALLOWED
    account = principal.account_id or owner
    if policy is not None and policy.broken:
        return Decision.DENIED
    identity_allows = False
    for statement in permissions.statements:
        if statement.applies(action, resource, context):
            if not statement.allow:
                return Decision.DENIED
            identity_allows = True
    names_principal = names_account = False
    if policy is not None:
        for statement in policy.statements:
            principals = statement.principals
            assert principals is not None
            named = principals.names(principal, account)
            of_account = not named and principals.names_account(principal, account)
            if not (named or of_account) or not statement.applies(action, resource, context):
                continue
            if not statement.allow:
                return Decision.DENIED
            names_principal = names_principal or named
            names_account = names_account or of_account
    if account == owner:
        allowed = identity_allows or names_principal
    else:
        allowed = identity_allows and (names_principal or names_account)
    return Decision.ALLOWED if allowed else Decision.NOT_ALLOWED


def delivery_context(topic_arn: str, topic_account: str) -> dict[str, str]:
    """The condition keys of a topic's delivery into a queue, as SNS sends them."""
    return {"aws:sourcearn": topic_arn, "aws:sourceaccount": topic_account, "aws:sourceowner": topic_account}


# --- what each operation is, as IAM names it -----------------------------------------------------
ACTIONS: dict[type, str] = {
    ops.CreateQueue: "sqs:CreateQueue",
    ops.DeleteQueue: "sqs:DeleteQueue",
    ops.GetQueueUrl: "sqs:GetQueueUrl",
    ops.ListQueues: "sqs:ListQueues",
    ops.PurgeQueue: "sqs:PurgeQueue",
    ops.GetQueueAttributes: "sqs:GetQueueAttributes",
    ops.SetQueueAttributes: "sqs:SetQueueAttributes",
    ops.SendMessage: "sqs:SendMessage",
    ops.SendMessageBatch: "sqs:SendMessage",  # a batch is authorised as its single action, as on AWS
    ops.ReceiveMessage: "sqs:ReceiveMessage",
    ops.DeleteMessage: "sqs:DeleteMessage",
    ops.DeleteMessageBatch: "sqs:DeleteMessage",
    ops.ChangeMessageVisibility: "sqs:ChangeMessageVisibility",
    ops.ChangeMessageVisibilityBatch: "sqs:ChangeMessageVisibility",
    ops.TagQueue: "sqs:TagQueue",
    ops.UntagQueue: "sqs:UntagQueue",
    ops.ListQueueTags: "sqs:ListQueueTags",
    ops.AddPermission: "sqs:AddPermission",
    ops.RemovePermission: "sqs:RemovePermission",
    ops.PeekMessages: "sqs:ReceiveMessage",  # the native protocol's browse: it shows what a receive shows
    ops.ListDeadLetterSourceQueues: "sqs:ListDeadLetterSourceQueues",
    ops.StartMessageMoveTask: "sqs:StartMessageMoveTask",
    ops.ListMessageMoveTasks: "sqs:ListMessageMoveTasks",
    ops.CancelMessageMoveTask: "sqs:CancelMessageMoveTask",
    ops.CreateTopic: "sns:CreateTopic",
    ops.DeleteTopic: "sns:DeleteTopic",
    ops.ListTopics: "sns:ListTopics",
    ops.GetTopicAttributes: "sns:GetTopicAttributes",
    ops.SetTopicAttributes: "sns:SetTopicAttributes",
    ops.Subscribe: "sns:Subscribe",
    ops.ConfirmSubscription: "sns:ConfirmSubscription",
    ops.Unsubscribe: "sns:Unsubscribe",
    ops.ListSubscriptions: "sns:ListSubscriptions",
    ops.ListSubscriptionsByTopic: "sns:ListSubscriptionsByTopic",
    ops.GetSubscriptionAttributes: "sns:GetSubscriptionAttributes",
    ops.SetSubscriptionAttributes: "sns:SetSubscriptionAttributes",
    ops.Publish: "sns:Publish",
    ops.PublishBatch: "sns:Publish",
    ops.TagTopic: "sns:TagResource",
    ops.UntagTopic: "sns:UntagResource",
    ops.ListTopicTags: "sns:ListTagsForResource",
    ops.AddTopicPermission: "sns:AddPermission",
    ops.RemoveTopicPermission: "sns:RemovePermission",
    ops.ExplainDelivery: "sns:ListSubscriptionsByTopic",  # it shows the subscriptions, as that listing does
    ops.CheckIfPhoneNumberIsOptedOut: "sns:CheckIfPhoneNumberIsOptedOut",
    ops.ListPhoneNumbersOptedOut: "sns:ListPhoneNumbersOptedOut",
    ops.OptInPhoneNumber: "sns:OptInPhoneNumber",
    ops.GetSMSSandboxAccountStatus: "sns:GetSMSSandboxAccountStatus",
    ops.ListOriginationNumbers: "sns:ListOriginationNumbers",
    ops.CreatePlatformApplication: "sns:CreatePlatformApplication",
    ops.GetPlatformApplicationAttributes: "sns:GetPlatformApplicationAttributes",
    ops.SetPlatformApplicationAttributes: "sns:SetPlatformApplicationAttributes",
    ops.ListPlatformApplications: "sns:ListPlatformApplications",
    ops.DeletePlatformApplication: "sns:DeletePlatformApplication",
    ops.CreatePlatformEndpoint: "sns:CreatePlatformEndpoint",
    ops.GetEndpointAttributes: "sns:GetEndpointAttributes",
    ops.SetEndpointAttributes: "sns:SetEndpointAttributes",
    ops.DeleteEndpoint: "sns:DeleteEndpoint",
    ops.ListEndpointsByPlatformApplication: "sns:ListEndpointsByPlatformApplication",
    ops.PublishToEndpoint: "sns:Publish",
    ops.GetSMSAttributes: "sns:GetSMSAttributes",
    ops.SetSMSAttributes: "sns:SetSMSAttributes",
}


def action_of(op: ops.Op) -> str:
    """The IAM action of an operation (KeyError for an object that is not an operation)."""
    return ACTIONS[type(op)]


# The Lambda REST API's operations (net/lambda_api.py), whose IAM action is lambda:<operation>
# but for these; their resource is the function's ARN (`*` for ListFunctions).
LAMBDA_ACTIONS = {"Invoke": "lambda:InvokeFunction"}


def lambda_action(operation: str) -> str:
    """The IAM action of a Lambda API operation (lambda:CreateFunction, lambda:InvokeFunction ...)."""
    return LAMBDA_ACTIONS.get(operation, f"lambda:{operation}")
