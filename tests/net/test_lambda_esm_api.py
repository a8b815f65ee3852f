"""The Lambda API's event source mapping door (net/lambda_esm_api.py) as botocore reads it: each
operation's path, method and status, and errors that botocore raises as Lambda's modelled
exceptions; on the autojump clock, with a stand-in function registry."""

import json

import botocore.session
import pytest
from botocore.parsers import RestJSONParser

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import CreateQueue
from dovecote.actors.principals import ANYONE
from dovecote.net import lambda_esm_api
from dovecote.net.lambda_api import error_response

from ..actors.test_esm import ARN, FUNCTION_ARN, REGION, StandInFunctions, mappings_running

ACCOUNT = "000000000000"
MODEL = botocore.session.get_session().get_service_model("lambda")


def parsed(operation, status, headers, body):
    response = {"status_code": status, "headers": {name.lower(): value for name, value in headers}, "body": body}
    return RestJSONParser().parse(response, MODEL.operation_model(operation).output_shape)


async def call(h, operation, method, path, query="", body=None):
    outcome = await lambda_esm_api.answer(h.mappings, method, path, query, json.dumps(body).encode() if body else b"", REGION,
                                          ANYONE, ACCOUNT)
    if isinstance(outcome, BrokerError):
        answer = error_response(outcome, "request-1")
        return parsed(operation, answer.status, answer.headers, answer.body)
    status, output = outcome
    expected = MODEL.operation_model(operation).http.get("responseCode", 200)
    assert status == expected
    return parsed(operation, status, [("Content-Type", "application/json")], json.dumps(output).encode())


async def test_the_operations_as_botocore_reads_them(autojump_clock):
    async with mappings_running(StandInFunctions()) as h:
        await h.ok(CreateQueue("q"))
        created = await call(h, "CreateEventSourceMapping", "POST", lambda_esm_api.PREFIX,
                             body={"EventSourceArn": ARN + "q", "FunctionName": "f", "BatchSize": 5})
        assert (created["State"], created["BatchSize"], created["FunctionArn"]) == ("Creating", 5, FUNCTION_ARN + "f")
        assert created["LastModified"].year >= 2020  # a timestamp botocore parsed
        path = f"{lambda_esm_api.PREFIX}/{created['UUID']}"
        assert (await call(h, "GetEventSourceMapping", "GET", path))["State"] == "Enabled"
        listed = await call(h, "ListEventSourceMappings", "GET", lambda_esm_api.PREFIX, query=f"EventSourceArn={ARN}q")
        assert [m["UUID"] for m in listed["EventSourceMappings"]] == [created["UUID"]]
        updated = await call(h, "UpdateEventSourceMapping", "PUT", path, body={"BatchSize": 7})
        assert (updated["State"], updated["BatchSize"]) == ("Updating", 7)
        assert (await call(h, "DeleteEventSourceMapping", "DELETE", path))["State"] == "Deleting"


@pytest.mark.parametrize("operation, method, path, body, code, status", [
    ("GetEventSourceMapping", "GET", "/no-such-uuid", None, "ResourceNotFoundException", 404),
    ("CreateEventSourceMapping", "POST", "", {"EventSourceArn": ARN + "q", "FunctionName": "nope"}, "ResourceNotFoundException", 404),
    ("CreateEventSourceMapping", "POST", "", {"EventSourceArn": ARN + "q", "FunctionName": "f", "BatchSize": 0},
     "InvalidParameterValueException", 400),
    ("CreateEventSourceMapping", "POST", "", {"EventSourceArn": ARN + "q", "FunctionName": "g"}, "ResourceConflictException", 409),
    ("UpdateEventSourceMapping", "PUT", "/no-such-uuid", {"BatchSize": 2}, "ResourceNotFoundException", 404),
])
async def test_errors_are_lambdas(autojump_clock, operation, method, path, body, code, status):
    async with mappings_running(StandInFunctions()) as h:
        await h.ok(CreateQueue("q"))
        await call(h, "CreateEventSourceMapping", "POST", lambda_esm_api.PREFIX, body={"EventSourceArn": ARN + "q", "FunctionName": "g"})
        outcome = await lambda_esm_api.answer(h.mappings, method, lambda_esm_api.PREFIX + path, "",
                                              json.dumps(body).encode() if body else b"", REGION, ANYONE, ACCOUNT)
        assert isinstance(outcome, BrokerError)
        answer = error_response(outcome, "request-1")
        error = parsed(operation, answer.status, answer.headers, answer.body)["Error"]
        assert (answer.status, error["Code"]) == (status, code)
        assert error["Message"] == outcome.message


async def test_a_body_that_is_not_a_json_object_is_refused(autojump_clock):
    async with mappings_running(StandInFunctions()) as h:
        for body in (b"{not json", b"[1]"):
            outcome = await lambda_esm_api.answer(h.mappings, "POST", lambda_esm_api.PREFIX, "", body, REGION, ANYONE, ACCOUNT)
            assert isinstance(outcome, BrokerError) and outcome.code == "InvalidParameterValueException"


async def test_a_key_is_allowed_only_the_mapping_actions_its_statements_name(autojump_clock):
    from ..actors.test_access import allow, key

    reader = key("reader", allow("lambda:ListEventSourceMappings"), allow("lambda:GetEventSourceMapping"))
    async with mappings_running(StandInFunctions()) as h:
        await h.ok(CreateQueue("q"))
        listed = await lambda_esm_api.answer(h.mappings, "GET", lambda_esm_api.PREFIX, "", b"", REGION, reader, ACCOUNT)
        assert listed == (200, {"EventSourceMappings": []})
        refused = await lambda_esm_api.answer(h.mappings, "POST", lambda_esm_api.PREFIX, "",
                                              json.dumps({"EventSourceArn": ARN + "q", "FunctionName": "f"}).encode(),
                                              REGION, reader, ACCOUNT)
        assert isinstance(refused, BrokerError) and refused.code == "AccessDeniedException"
        assert "lambda:CreateEventSourceMapping" in refused.message
        assert (await lambda_esm_api.answer(h.mappings, "GET", lambda_esm_api.PREFIX, "", b"", REGION, ANYONE, ACCOUNT))[0] == 200
