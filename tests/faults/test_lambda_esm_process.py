"""Event source mappings end to end: unmodified boto3 against a real `dovecote serve`."""

import boto3
import pytest
from botocore.config import Config

from .serve import ServeProcess

ACCOUNT = "000000000000"
QUEUE_ARN = f"arn:aws:sqs:us-east-1:{ACCOUNT}:"


def client(broker, service):
    return boto3.client(
        service, endpoint_url=f"http://127.0.0.1:{broker.http_port}", region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test", config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture
def broker(tmp_path):
    broker = ServeProcess(tmp_path / "data").start()
    yield broker
    broker.terminate()


def test_bad_mapping_requests_get_lambdas_errors_and_the_broker_stays_up(broker):
    lam, sqs = client(broker, "lambda"), client(broker, "sqs")
    sqs.create_queue(QueueName="q")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_event_source_mapping(EventSourceArn=QUEUE_ARN + "q", FunctionName="no-such-function")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_event_source_mapping(EventSourceArn=QUEUE_ARN + "q", FunctionName="f", StartingPosition="LATEST")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_event_source_mapping(UUID="0f6a8b5e-0000-4000-8000-000000000000")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_event_source_mapping(UUID="0f6a8b5e-0000-4000-8000-000000000000")
    assert lam.list_event_source_mappings()["EventSourceMappings"] == []
    assert sqs.list_queues()["QueueUrls"]  # still serving
