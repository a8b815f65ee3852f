"""A session: a client connection's way into one region's namespace of the broker, as one principal.

`submit` routes an operation without ever waiting: a queue's or topic's operation goes straight to
that actor's mailbox (found in the directory), a creation or deletion to the lifecycle task's,
and what the directory alone can answer (GetQueueUrl, the List* of queues and topics, the
dead-letter sources, the checks of StartMessageMoveTask, the account's SMS state) is answered here
and now. Owned by the connection's task.

Authorisation happens here, before routing, for every operation of every door (each door makes its
sessions with the principal it proved): authorization.decide is asked with the operation's action,
its resource (the queue's or topic's ARN, `*` for the listings) and that resource's Policy as its
actor last published it in the directory. So a refused request never reaches an actor or its
mailbox, and a principal allowed everything costs one attribute test. A request already in an
actor's mailbox when its policy changes was let in by the policy before; AWS, too, takes a moment
to apply a policy change.
"""

from __future__ import annotations

import trio

from . import paging
from .directory import Directory
from .authorization import Decision, Policy, action_of, decide
from .errors import BrokerError, access_denied, failure, from_failure, invalid_parameter, no_such_queue, no_such_topic, overloaded, shutting_down
from .lifecycle import LIFECYCLE_OPS
from .mailbox import Mailbox, MailboxFull, ReplySlot
from .mobile import sms_account_answer
from .platform import Platform
from .platform_core import endpoint_missing, platform_resource
from .messages import Reply, Request
from .principals import Principal
from .ops import (
    Arns,
    ConfirmSubscription,
    Failure,
    GetQueueUrl,
    ListDeadLetterSourceQueues,
    ListQueues,
    ListSubscriptions,
    ListTopics,
    Op,
    QueueName,
    PlatformOp,
    SmsAccountOp,
    QueueOp,
    Result,
    Subscribe,
    SetQueueAttributes,
    StartMessageMoveTask,
    TopicOp,
)


class Session:
    def __init__(
        self,
        directory: Directory,
        lifecycle: Mailbox,
        region: str,
        principal: Principal,
        account_id: str = "000000000000",
        platform: Platform | None = None,
    ) -> None:
        """account_id: the account this broker hosts, which owns every queue and topic. platform:
        the actor of the platform applications and endpoints (None: their operations are refused)."""
        self._directory = directory
        self._lifecycle = lifecycle
        self._platform = platform
        self.region = region
        self.principal = principal  # whose requests these are
        self._restricted = not principal.unrestricted  # its requests are authorised one by one
        self._account_id = account_id

    def submit(self, op: Op, reply: Reply, trace_header: str = "") -> None:
        """Route op to whoever serves it; reply is called exactly once, now or later, from that
        task. Never blocks. trace_header: the request's X-Amzn-Trace-Id, if it had one."""
        try:
            self._route(op, reply, trace_header)
        except BrokerError as error:
            reply(failure(error))

    def _route(self, op: Op, reply: Reply, trace_header: str) -> None:
        directory, region = self._directory, self.region
        if self._restricted:
            self._authorize(op)
        if isinstance(op, LIFECYCLE_OPS) or (isinstance(op, SetQueueAttributes) and "RedrivePolicy" in op.attributes):
            try:
                self._lifecycle.submit(Request(op, reply, region))
            except MailboxFull:
                raise overloaded("The broker's lifecycle task (creating and deleting)") from None
            except trio.ClosedResourceError:
                raise shutting_down() from None
            return
        match op:
            case GetQueueUrl():
                if directory.queue(region, op.queue) is None:
                    raise no_such_queue()
                reply(QueueName(op.queue))
            case ListQueues():
                names = [name for name in directory.queue_names(region) if name.startswith(op.prefix)]
                reply(paging.queue_names_page(names, op.max_results, op.next_token))
            case ListDeadLetterSourceQueues():
                entry = directory.queue(region, op.queue)
                if entry is None:
                    raise no_such_queue()
                names = [source.name for source in directory.dead_letter_sources(entry.arn) if source.region == region]
                reply(paging.queue_names_page(names, op.max_results, op.next_token))
            case ListTopics():
                arns, token = paging.sns_page(directory.topic_arns(region), op.next_token)
                reply(Arns(arns, token))
            case StartMessageMoveTask():
                self._start_move_task(op, reply)
            case SmsAccountOp():
                reply(sms_account_answer(op))
            case PlatformOp():
                if self._platform is None:
                    raise BrokerError("InvalidAction", f"{type(op).__name__} is not an operation of this broker.")
                if not self._delivered(self._platform.mailbox, Request(op, reply, region), "Platform", "applications"):
                    raise shutting_down()
            case Subscribe(protocol="application") if self._platform is not None and self._platform.unknown_endpoint(op.endpoint):
                raise endpoint_missing()
            case QueueOp():
                entry = directory.queue(region, op.queue)
                if entry is None or not self._delivered(entry.mailbox, Request(op, reply), "Queue", op.queue):
                    raise no_such_queue()
            case TopicOp():
                entry = directory.topic(region, op.topic)
                if entry is None and isinstance(op, ConfirmSubscription):
                    raise invalid_parameter("Topic")  # AWS's answer to a confirmation for no topic
                request = Request(op, reply, trace_header=trace_header)
                if entry is None or not self._delivered(entry.mailbox, request, "Topic", op.topic):
                    raise no_such_topic()
            case _:
                raise BrokerError("InvalidAction", f"{type(op).__name__} is not an operation of this broker.")

    def _authorize(self, op: Op) -> None:
        """Raise the service's access-denied error unless the principal may do op."""
        try:
            action = action_of(op)
        except KeyError:
            raise BrokerError("InvalidAction", f"{type(op).__name__} is not an operation of this broker.") from None
        directory, region, account = self._directory, self.region, self._account_id
        policy = None
        if isinstance(op, (ListQueues, ListTopics, ListSubscriptions, SmsAccountOp)):
            resource = "*"
        elif isinstance(op, PlatformOp):
            resource = platform_resource(op)
        elif isinstance(op, QueueOp):
            entry = directory.queue(region, op.queue)
            resource = entry.arn if entry is not None else f"arn:aws:sqs:{region}:{account}:{op.queue}"
            policy = entry.policy.policy if entry is not None else None
        elif isinstance(op, TopicOp):
            entry = directory.topic(region, op.topic)
            resource = entry.arn if entry is not None else f"arn:aws:sns:{region}:{account}:{op.topic}"
            policy = entry.policy.policy if entry is not None else None
        else:
            raise BrokerError("InvalidAction", f"{type(op).__name__} is not an operation of this broker.")
        self._check(action, resource, policy)
        if isinstance(op, StartMessageMoveTask) and op.destination_arn:
            # The task sends into its destination: the principal must be allowed to, as on AWS.
            destination = directory.queue_by_arn(op.destination_arn)
            self._check("sqs:SendMessage", op.destination_arn, destination.policy.policy if destination is not None else None)

    def _check(self, action: str, resource: str, policy: Policy | None) -> None:
        decision = decide(self.principal, action, resource, self._account_id, policy)
        if decision is not Decision.ALLOWED:
            raise access_denied(self.principal.arn(self._account_id), action, resource, decision is Decision.DENIED)

    @staticmethod
    def _delivered(mailbox: Mailbox, request: Request, kind: str, name: str) -> bool:
        """Into the actor's mailbox; False when the actor has ended for good (deleted)."""
        try:
            mailbox.submit(request)
        except MailboxFull:
            raise overloaded(f"{kind} {name}") from None
        except trio.ClosedResourceError:
            return False
        return True

    def _start_move_task(self, op: StartMessageMoveTask, reply: Reply) -> None:
        """The task's source must be some queue's dead-letter queue, and its destination (if one is
        named) another queue of the same type; the source queue's actor does the rest."""
        entry = self._directory.queue(self.region, op.queue)
        missing = BrokerError("ResourceNotFoundException", f"The source queue {op.queue} does not exist.")
        if entry is None:
            raise missing
        if not self._directory.dead_letter_sources(entry.arn):
            raise _invalid_move("The source queue must be configured as a dead-letter queue of another queue.")
        if op.destination_arn:
            destination = self._directory.queue_by_arn(op.destination_arn)
            if destination is None:
                raise BrokerError("ResourceNotFoundException", f"The destination queue {op.destination_arn} does not exist.")
            if destination.fifo != entry.fifo or destination is entry:
                raise _invalid_move("The destination must be another queue of the same type as the source.")
        if not self._delivered(entry.mailbox, Request(op, reply), "Queue", op.queue):
            raise missing


async def ask(session: Session, op: Op) -> Result:
    """An operation through a session, for an actor that asks as a client does (a shovel, the event
    source mappings' checks); raises the BrokerError a Failure answer carries."""
    slot: ReplySlot[Result] = ReplySlot()
    session.submit(op, slot)
    result = await slot.wait()
    if isinstance(result, Failure):
        raise from_failure(result)
    return result


def _invalid_move(reason: str) -> BrokerError:
    return BrokerError("UnsupportedOperation", reason)
