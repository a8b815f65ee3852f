"""Event source mappings in a running broker (actors/esm.py), on trio's autojump clock, with a
stand-in function registry: the API's rulings, the pollers' batching, deletion, redrive, FIFO order,
filters and concurrency, and restoring mappings after a restart."""

import contextlib
import json
from typing import NamedTuple

import msgspec
import trio

from dovecote.actors.errors import BrokerError
from dovecote.actors.esm import EventSourceMappings, MappingRequest
from dovecote.actors.ops import CreateQueue, DeleteQueue, GetQueueAttributes, ReceiveMessage, SendMessage
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import MessageDeleted

from ..conftest import running_broker

REGION = "us-east-1"
ARN = f"arn:aws:sqs:{REGION}:000000000000:"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:000000000000:function:"


class Invocation(msgspec.Struct):
    payload: bytes
    function_error: str | None
    request_id: str


class StandInFunction(NamedTuple):
    name: str
    timeout_s: int


class StandInFunctions:
    """Functions that answer what `answer` says for each event, and note every event."""

    def __init__(self, answer=None, names=("f", "g"), hold_s=0.0, timeout_s=3):
        self.timeout_s = timeout_s
        self.events: list[dict] = []
        self.answer = answer or (lambda event: (b"null", None))
        self.names = names
        self.hold_s = hold_s
        self.running = self.most_running = 0

    def resolve(self, reference, region=""):
        return reference.rpartition(":function:")[2] or reference

    def get(self, name):
        if name not in self.names:
            raise BrokerError("ResourceNotFoundException", f"Function not found: {FUNCTION_ARN}{name}")
        return StandInFunction(name, self.timeout_s)

    def arn(self, function):
        return FUNCTION_ARN + function.name

    async def invoke(self, function, payload, *, asynchronous=False, message_ids=()):
        event = json.loads(payload)
        assert list(message_ids) == [record["messageId"] for record in event["Records"]]  # recorded with the invocation
        self.events.append(event)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await trio.sleep(self.hold_s)
        finally:
            self.running -= 1
        answer, error = self.answer(event)
        return Invocation(answer, error, f"req-{len(self.events)}")

    def bodies(self):
        return [record["body"] for event in self.events for record in event["Records"]]


@contextlib.asynccontextmanager
async def mappings_running(functions, store=None):
    async with running_broker(store) as h:
        mappings = EventSourceMappings(
            h.store.load_event_source_mappings(), h.writer, h.clock, h.broker.directory, h.broker.session, functions, 100,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(mappings.run)
            h.mappings = mappings
            yield h
            mappings.stop()


async def ok(h, action, uuid="", **params):
    answer = await h.mappings.ask(MappingRequest(action, REGION, uuid, params))
    if isinstance(answer, BrokerError):
        raise answer
    return answer


async def refused(h, action, uuid="", **params):
    answer = await h.mappings.ask(MappingRequest(action, REGION, uuid, params))
    assert isinstance(answer, BrokerError), answer
    return answer


async def depth(h, queue):
    attributes = (await h.ok(GetQueueAttributes(queue, ["All"]))).attributes
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


async def test_a_batch_is_handed_over_and_deleted(autojump_clock):
    functions = StandInFunctions()
    async with mappings_running(functions) as h:
        await h.ok(CreateQueue("q"))
        for index in range(3):
            await h.ok(SendMessage("q", f"m{index}"))
        created = await ok(h, "Create", EventSourceArn=ARN + "q", FunctionName="f", BatchSize=5)
        assert created["State"] == "Creating" and created["FunctionArn"] == FUNCTION_ARN + "f"
        await trio.sleep(1)
        assert sorted(functions.bodies()) == ["m0", "m1", "m2"]
        record = functions.events[0]["Records"][0]
        assert (record["eventSource"], record["eventSourceARN"], record["awsRegion"]) == ("aws:sqs", ARN + "q", REGION)
        assert await depth(h, "q") == 0
        assert (await ok(h, "Get", created["UUID"]))["State"] == "Enabled"


async def test_a_failed_batch_returns_and_ends_in_the_dead_letter_queue(autojump_clock):
    functions = StandInFunctions(lambda event: (b'{"errorMessage": "no"}', "Unhandled"))
    async with mappings_running(functions) as h:
        await h.ok(CreateQueue("dlq"))
        policy = json.dumps({"deadLetterTargetArn": ARN + "dlq", "maxReceiveCount": 2})
        await h.ok(CreateQueue("q", {"VisibilityTimeout": "10", "RedrivePolicy": policy}))
        await h.ok(SendMessage("q", "poison"))
        await ok(h, "Create", EventSourceArn=ARN + "q", FunctionName="f")
        await trio.sleep(5)
        assert functions.bodies() == ["poison"]  # hidden for its visibility timeout
        await trio.sleep(30)
        assert functions.bodies() == ["poison", "poison"]  # received twice: maxReceiveCount
        (dead,) = (await h.ok(ReceiveMessage("dlq"))).messages
        assert dead.body == "poison"
        counts = [e["Records"][0]["attributes"]["ApproximateReceiveCount"] for e in functions.events]
        assert counts == ["1", "2"]


async def test_reported_item_failures_delete_only_the_others(autojump_clock):
    def answer(event):
        failed = [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "bad"]
        return json.dumps({"batchItemFailures": failed}).encode(), None

    functions = StandInFunctions(answer)
    async with mappings_running(functions) as h:
        await h.ok(CreateQueue("q", {"VisibilityTimeout": "30"}))
        for body in ("good", "bad", "fine"):
            await h.ok(SendMessage("q", body))
        await ok(h, "Create", EventSourceArn=ARN + "q", FunctionName="f", FunctionResponseTypes=["ReportBatchItemFailures"],
                 MaximumBatchingWindowInSeconds=1)
        await trio.sleep(5)
        assert sorted(functions.bodies()) == ["bad", "fine", "good"]
        assert await depth(h, "q") == 1  # the failed one, in flight until its visibility timeout
        await trio.sleep(30)
        assert functions.bodies()[-1] == "bad"


async def test_fifo_groups_stay_in_order(autojump_clock):
    """Four workers; each group's messages reach the function in the order they were sent. The
    function fails a1 once and reports only a1 (not a2 after it, in its batch): the broker keeps
    a2 back too, so after the failure group a is handled again from a1, in order."""
    failed_once = set()

    def answer(event):
        for record in event["Records"]:
            if record["body"] == "a1" and "a1" not in failed_once:
                failed_once.add("a1")
                return json.dumps({"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}).encode(), None
        return b"", None

    functions = StandInFunctions(answer, hold_s=0.1)
    async with mappings_running(functions) as h:
        await h.ok(CreateQueue("q.fifo", {"FifoQueue": "true", "ContentBasedDeduplication": "true", "VisibilityTimeout": "5"}))
        for index in range(1, 6):
            for group in "abc":
                await h.ok(SendMessage("q.fifo", f"{group}{index}", message_group_id=group))
        await ok(h, "Create", EventSourceArn=ARN + "q.fifo", FunctionName="f", BatchSize=3,
                 FunctionResponseTypes=["ReportBatchItemFailures"], ScalingConfig={"MaximumConcurrency": 4})
        await trio.sleep(20)
        batches = [[record["body"] for record in event["Records"]] for event in functions.events]
        failed_batch = next(index for index, bodies in enumerate(batches) if "a1" in bodies)
        assert batches[failed_batch][:2] == ["a1", "a2"]  # a2 came with it, and was kept back with it
        after = [body for bodies in batches[failed_batch + 1 :] for body in bodies]
        assert [body for body in after if body[0] == "a"] == ["a1", "a2", "a3", "a4", "a5"]
        for group in "bc":
            assert [body for bodies in batches for body in bodies if body[0] == group] == [f"{group}{i}" for i in range(1, 6)]
        assert await depth(h, "q.fifo") == 0


async def test_filter_criteria_delete_what_no_pattern_matches(autojump_clock):
    functions = StandInFunctions()
    async with mappings_running(functions) as h:
        await h.ok(CreateQueue("q"))
        for body in ('{"kind": "order"}', '{"kind": "refund"}', "plain"):
            await h.ok(SendMessage("q", body))
        await ok(h, "Create", EventSourceArn=ARN + "q", FunctionName="f", MaximumBatchingWindowInSeconds=1,
                 FilterCriteria={"Filters": [{"Pattern": '{"body": {"kind": ["order"]}}'}]})
        await trio.sleep(5)
        assert functions.bodies() == ['{"kind": "order"}']
        assert await depth(h, "q") == 0
        deleted = sorted(r.reason for _, r in h.store.read_log() if isinstance(r, MessageDeleted))
        assert deleted == ["deleted"] * 3


async def test_a_batching_window_gathers_up_to_the_batch_size(autojump_clock):
    functions = StandInFunctions()
    async with mappings_running(functions) as h:
        await h.ok(CreateQueue("q"))
        for index in range(60):
            await h.ok(SendMessage("q", f"m{index}"))
        created = await ok(h, "Create", EventSourceArn=ARN + "q", FunctionName="f", BatchSize=25, MaximumBatchingWindowInSeconds=10,
                           ScalingConfig={"MaximumConcurrency": 2})
        await trio.sleep(30)
        sizes = [len(event["Records"]) for event in functions.events]
        assert sum(sizes) == 60 and max(sizes) == 25, sizes  # full batches, never more
        # trickling in, what the window's ten seconds bring goes in one batch per worker
        functions.events.clear()
        for index in range(30):
            await h.ok(SendMessage("q", f"t{index}"))
            await trio.sleep(0.2)
        await trio.sleep(20)
        sizes = [len(event["Records"]) for event in functions.events]
        assert sum(sizes) == 30 and len(sizes) <= 2, sizes
        assert created["MaximumBatchingWindowInSeconds"] == 10


async def test_concurrency_is_bounded_by_maximum_concurrency(autojump_clock):
    functions = StandInFunctions(hold_s=1)
    async with mappings_running(functions) as h:
        await h.ok(CreateQueue("q"))
        for index in range(40):
            await h.ok(SendMessage("q", f"m{index}"))
        await ok(h, "Create", EventSourceArn=ARN + "q", FunctionName="f", BatchSize=2, ScalingConfig={"MaximumConcurrency": 3})
        await trio.sleep(30)
        assert len(functions.bodies()) == 40
        assert functions.most_running == 3


async def test_api_rulings(autojump_clock):
    functions = StandInFunctions()
    async with mappings_running(functions) as h:
        await h.ok(CreateQueue("q"))
        await h.ok(CreateQueue("r"))
        created = await ok(h, "Create", EventSourceArn=ARN + "q", FunctionName="f")
        uuid = created["UUID"]
        assert (await refused(h, "Create", EventSourceArn=ARN + "q", FunctionName=FUNCTION_ARN + "f")).code == "ResourceConflictException"
        assert (await refused(h, "Create", EventSourceArn=ARN + "q", FunctionName="nope")).code == "ResourceNotFoundException"
        missing_queue = await refused(h, "Create", EventSourceArn=ARN + "missing", FunctionName="f")
        assert missing_queue.code == "InvalidParameterValueException" and "NonExistentQueue" in missing_queue.message
        assert (await refused(h, "Create", FunctionName="f")).code == "InvalidParameterValueException"
        await h.ok(CreateQueue("brief", {"VisibilityTimeout": "2"}))
        too_brief = await refused(h, "Create", EventSourceArn=ARN + "brief", FunctionName="f")
        assert too_brief.message == "Queue visibility timeout: 2 seconds is less than Function timeout: 3 seconds"
        assert (await refused(h, "Get", "no-such-uuid")).code == "ResourceNotFoundException"
        await ok(h, "Create", EventSourceArn=ARN + "r", FunctionName="f")
        await ok(h, "Create", EventSourceArn=ARN + "q", FunctionName="g")
        assert len((await ok(h, "List"))["EventSourceMappings"]) == 3
        assert len((await ok(h, "List", EventSourceArn=ARN + "q"))["EventSourceMappings"]) == 2
        assert len((await ok(h, "List", FunctionName="g"))["EventSourceMappings"]) == 1
        first = await ok(h, "List", MaxItems="2")
        rest = await ok(h, "List", Marker=first["NextMarker"])
        assert len(first["EventSourceMappings"]) == 2 and len(rest["EventSourceMappings"]) == 1 and "NextMarker" not in rest
        # an update to another function that already has this queue is a conflict
        assert (await refused(h, "Update", uuid, FunctionName="g")).code == "ResourceConflictException"
        updated = await ok(h, "Update", uuid, Enabled=False, BatchSize=3)
        assert (updated["State"], updated["BatchSize"]) == ("Disabling", 3)
        assert (await ok(h, "Get", uuid))["State"] == "Disabled"
        assert (await ok(h, "Delete", uuid))["State"] == "Deleting"
        assert (await refused(h, "Get", uuid)).code == "ResourceNotFoundException"
        # a mapping whose queue was deleted, moved to another function: Lambda's words, not SQS's error
        [of_r] = (await ok(h, "List", EventSourceArn=ARN + "r"))["EventSourceMappings"]
        await h.ok(DeleteQueue("r"))
        gone = await refused(h, "Update", of_r["UUID"], FunctionName="g")
        assert gone.code == "InvalidParameterValueException" and "NonExistentQueue" in gone.message


async def test_requests_past_the_mailbox_capacity_are_refused_retryably(autojump_clock):
    async with running_broker() as h:
        mappings = EventSourceMappings([], h.writer, h.clock, h.broker.directory, h.broker.session, StandInFunctions(), 2)
        answers = []

        async def ask():
            answers.append(await mappings.ask(MappingRequest("List", REGION)))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(ask)
            await trio.sleep(1)  # not running: two wait in its mailbox, the third is refused
            assert [a.code for a in answers] == ["RequestThrottled"] and answers[0].retryable
            await nursery.start(mappings.run)
            await trio.sleep(1)
            mappings.stop()
        assert answers[1:] == [{"EventSourceMappings": []}] * 2


async def test_a_disabled_mapping_does_not_poll(autojump_clock):
    functions = StandInFunctions()
    async with mappings_running(functions) as h:
        await h.ok(CreateQueue("q"))
        created = await ok(h, "Create", EventSourceArn=ARN + "q", FunctionName="f", Enabled=False)
        await h.ok(SendMessage("q", "m"))
        await trio.sleep(30)
        assert functions.events == []
        await ok(h, "Update", created["UUID"], Enabled=True)
        await trio.sleep(1)
        assert functions.bodies() == ["m"]


async def test_a_stopped_poller_does_not_hide_what_its_long_poll_brings(autojump_clock):
    functions = StandInFunctions()
    async with mappings_running(functions) as h:
        await h.ok(CreateQueue("q", {"VisibilityTimeout": "300"}))
        created = await ok(h, "Create", EventSourceArn=ARN + "q", FunctionName="f")
        await trio.sleep(1)  # its long polls wait
        await ok(h, "Update", created["UUID"], Enabled=False)
        await h.ok(SendMessage("q", "m"))  # taken by a stopped poll, and given back at once
        await trio.sleep(1)
        await ok(h, "Update", created["UUID"], Enabled=True)
        await trio.sleep(1)
        assert functions.bodies() == ["m"]


async def test_mappings_are_restored_after_a_restart(autojump_clock):
    store = MemoryStore()
    functions = StandInFunctions()
    async with mappings_running(functions, store) as h:
        await h.ok(CreateQueue("q"))
        created = await ok(h, "Create", EventSourceArn=ARN + "q", FunctionName="f", BatchSize=7,
                           FilterCriteria={"Filters": [{"Pattern": '{"body": ["m"]}'}]})
        deleted = await ok(h, "Create", EventSourceArn=ARN + "q", FunctionName="g")
        await ok(h, "Delete", deleted["UUID"])
    async with running_broker(store) as h:  # the broker's own mappings actor restores them
        (restored,) = (await h.broker.mappings.ask(MappingRequest("List", REGION)))["EventSourceMappings"]
        assert {k: v for k, v in restored.items() if k != "State"} == {k: v for k, v in created.items() if k != "State"}


async def test_each_mapping_reports_itself(autojump_clock):
    functions = StandInFunctions(lambda event: (b"", "Unhandled") if event["Records"][0]["body"] == "bad" else (b"", None))
    async with running_broker() as h:
        h.broker.mappings._functions = functions  # the broker's own mappings actor, with the stand-in functions
        await h.ok(CreateQueue("q"))
        created = await h.broker.mappings.ask(MappingRequest("Create", REGION, "", {
            "EventSourceArn": ARN + "q", "FunctionName": "f", "BatchSize": 1,
            "FilterCriteria": {"Filters": [{"Pattern": '{"body": [{"anything-but": "skip"}]}'}]},
        }))
        for body in ("good", "bad", "skip"):
            await h.ok(SendMessage("q", body))
        await trio.sleep(5)
        (report,) = [r for r in h.broker.statistics() if r.kind == "event-source-mapping"]
        assert (report.name, report.region) == (created["UUID"], REGION)
        assert report.actor._asdict() == {
            "queue_arn": ARN + "q", "function_arn": FUNCTION_ARN + "f", "state": "Enabled", "invocations": 2, "messages": 2,
            "function_errors": 1, "kept": 1, "filtered": 1, "failures": 0,
        }
        await h.broker.mappings.ask(MappingRequest("Update", REGION, created["UUID"], {"Enabled": False}))
        (report,) = [r for r in h.broker.statistics() if r.kind == "event-source-mapping"]
        assert (report.actor.state, report.actor.invocations) == ("Disabled", 0)


async def test_a_function_registry_that_raises_fails_the_mapping_not_the_broker(autojump_clock):
    class Broken(StandInFunctions):
        async def invoke(self, function, payload, *, asynchronous=False, message_ids=()):
            raise RuntimeError("a bug")

    async with running_broker() as h:
        h.broker.mappings._functions = Broken()
        await h.ok(CreateQueue("q"))
        await h.broker.mappings.ask(MappingRequest("Create", REGION, "", {"EventSourceArn": ARN + "q", "FunctionName": "f"}))
        await h.ok(SendMessage("q", "m"))
        await trio.sleep(5)
        (report,) = [r for r in h.broker.statistics() if r.kind == "event-source-mapping"]
        assert report.actor.failures >= 1 and report.health.last_error == "RuntimeError: a bug"
        await h.ok(CreateQueue("still-serving"))


async def test_a_batch_is_cut_short_at_lambdas_payload_limit(autojump_clock):
    """A batch of 30 messages of 240 KB would be 7.2 MB, past Lambda's 6 MiB: it carries what fits,
    and the rest come in a later one, at once (not after the visibility timeout)."""
    functions = StandInFunctions()
    async with mappings_running(functions) as h:
        await h.ok(CreateQueue("q", {"VisibilityTimeout": "600"}))
        for index in range(60):
            await h.ok(SendMessage("q", f"{index:02d}" + "x" * 240_000))
        await ok(h, "Create", EventSourceArn=ARN + "q", FunctionName="f", BatchSize=30, MaximumBatchingWindowInSeconds=5,
                 ScalingConfig={"MaximumConcurrency": 2})
        await trio.sleep(30)
        sizes = [len(json.dumps(event, separators=(",", ":"))) for event in functions.events]
        assert len(sizes) >= 3 and max(sizes) <= 6 * 1024 * 1024, sizes
        assert sorted(body[:2] for body in functions.bodies()) == [f"{index:02d}" for index in range(60)]  # each once
        assert await depth(h, "q") == 0
