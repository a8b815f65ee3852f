"""Lambda functions' pure rules: names and ARNs as Lambda reads them, what a configuration may be,
and what each change stores."""

import io
import zipfile

import pytest

from dovecote.actors.errors import BrokerError
from dovecote.actors.function_core import Code, FunctionName, FunctionsCore, instance_environment, parse_reference
from dovecote.storage.records import FunctionChanged, FunctionCodeStored, FunctionDeleted

ACCOUNT, REGION = "000000000000", "us-east-1"
PARAMS = {"FunctionName": "f", "Runtime": "python3.12", "Role": "r", "Handler": "handler.main"}


def zipped() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("handler.py", "def main(e, c): return e\n")
    return out.getvalue()


@pytest.mark.parametrize(
    "reference, expected",
    [
        ("f", (FunctionName("", "f"), "")),
        ("f:$LATEST", (FunctionName("", "f"), "$LATEST")),
        ("000000000000:function:f", (FunctionName("", "f"), "")),
        ("arn:aws:lambda:us-east-1:000000000000:function:f", (FunctionName("", "f"), "")),
        ("arn:aws:lambda:eu-west-1:000000000000:function:f:$LATEST", (FunctionName("eu-west-1", "f"), "$LATEST")),
    ],
)
def test_a_function_is_named_by_its_name_or_any_form_of_its_arn(reference, expected):
    assert parse_reference(reference, ACCOUNT, REGION) == expected


@pytest.mark.parametrize(
    "reference, code",
    [
        ("bad name!", "InvalidParameterValueException"),
        ("", "InvalidParameterValueException"),
        ("arn:aws:lambda:us-east-1:111111111111:function:f", "ResourceNotFoundException"),  # another account's
        ("f:1", "ResourceNotFoundException"),  # no versions but $LATEST
    ],
)
def test_what_names_no_function_here_is_refused(reference, code):
    with pytest.raises(BrokerError) as refused:
        parse_reference(reference, ACCOUNT, REGION)
    assert refused.value.code == code


def test_a_name_alone_is_of_the_callers_region():
    assert parse_reference("f", ACCOUNT, REGION, "eu-west-1") == (FunctionName("eu-west-1", "f"), "")
    assert parse_reference("f", ACCOUNT, REGION, REGION) == (FunctionName("", "f"), "")


def test_a_create_stores_the_zip_then_the_configuration_and_a_delete_both():
    core = FunctionsCore(ACCOUNT, REGION, [])
    records = core.plan_create(REGION, PARAMS, Code(zip=zipped()), 1000, "rev-1")
    assert [type(r) for r in records] == [FunctionCodeStored, FunctionChanged]
    code, changed = records
    assert code.code_sha256 == changed.code_sha256 and changed.code_size == len(code.zip) and changed.region == ""
    assert (changed.timeout_s, changed.memory_mb, changed.reserved_concurrency) == (3, 128, -1)  # AWS's defaults; none reserved
    for record in records:
        core.apply(record)
    with pytest.raises(BrokerError) as again:
        core.plan_create(REGION, PARAMS, Code(zip=zipped()), 1000, "rev-2")
    assert again.value.code == "ResourceConflictException"
    (deleted,) = core.plan_delete(FunctionName("", "f"), 2000)
    assert deleted == FunctionDeleted(2000, "", "f")


def test_a_directory_is_run_where_it_is_and_stores_no_zip():
    core = FunctionsCore(ACCOUNT, REGION, [])
    (changed,) = core.plan_create(REGION, PARAMS, Code(path="/srv/functions/f"), 1000, "rev-1")
    assert changed.code_path == "/srv/functions/f" and changed.code_size == 0
    with pytest.raises(BrokerError):
        core.plan_create(REGION, PARAMS, Code(path="relative/dir"), 1000, "rev-1")


@pytest.mark.parametrize(
    "change, words",
    [
        ({"Runtime": "java21"}, "runtime"),
        ({"Timeout": 0}, "Timeout"),
        ({"Timeout": True}, "Timeout"),
        ({"MemorySize": 64}, "MemorySize"),
        ({"Handler": "has space.main"}, "white space"),
        ({"Role": ""}, "Role"),
        ({"Environment": {"Variables": {"1BAD": "x"}}}, "names must match"),
        ({"Environment": {"Variables": {"_HANDLER": "x"}}}, "Reserved keys used in this request: _HANDLER"),
        ({"Environment": {"Variables": {"BIG": "x" * 5000}}}, "4096 bytes"),
        ({"Environment": {"Variables": {"N": 1}}}, "map names to text"),
        ({"PackageType": "Image"}, "Zip packages only"),
    ],
)
def test_a_configuration_out_of_lambdas_bounds_is_refused_in_its_words(change, words):
    core = FunctionsCore(ACCOUNT, REGION, [])
    with pytest.raises(BrokerError) as refused:
        core.plan_create(REGION, {**PARAMS, **change}, Code(zip=zipped()), 1000, "rev")
    assert refused.value.code == "InvalidParameterValueException" and words in refused.value.message


def test_an_update_keeps_what_it_does_not_name_and_checks_the_revision():
    core = FunctionsCore(ACCOUNT, REGION, [])
    for record in core.plan_create(REGION, {**PARAMS, "Timeout": 30}, Code(zip=zipped()), 1000, "rev-1"):
        core.apply(record)
    (changed,) = core.plan_update_configuration(FunctionName("", "f"), {"MemorySize": 512}, 2000, "rev-2")
    assert (changed.timeout_s, changed.memory_mb, changed.handler) == (30, 512, "handler.main")
    with pytest.raises(BrokerError) as stale:
        core.plan_update_configuration(FunctionName("", "f"), {"RevisionId": "rev-0"}, 2000, "rev-3")
    assert stale.value.code == "PreconditionFailedException"
    with pytest.raises(BrokerError) as not_a_zip:
        core.plan_update_code(FunctionName("", "f"), {}, Code(zip=b"PK not really"), 2000, "rev-3")
    assert "Could not unzip uploaded file" in not_a_zip.value.message


def test_the_functions_own_variables_win_and_lambdas_cannot_be_displaced():
    core = FunctionsCore(ACCOUNT, REGION, [])
    params = {**PARAMS, "Environment": {"Variables": {"AWS_ENDPOINT_URL": "https://sqs.example", "PATH": "/opt/bin"}}}
    function = core.plan_create(REGION, params, Code(zip=zipped()), 1000, "rev")[-1]
    environment = instance_environment(function, REGION, "/code", "http://127.0.0.1:7481", {"PATH": "/usr/bin", "HOME": "/root"})
    assert environment["AWS_ENDPOINT_URL"] == "https://sqs.example" and environment["PATH"] == "/opt/bin"
    assert environment["HOME"] == "/root" and environment["LAMBDA_TASK_ROOT"] == "/code" and environment["_HANDLER"] == "handler.main"
