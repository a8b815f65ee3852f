"""SNS platform applications and endpoints in the broker: stored with their state tables and
rebuilt from them at start, paged as SNS pages, deleted with their application, authorised by
their own IAM actions, on the autojump clock."""

import pytest

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import (
    Arn,
    CreatePlatformApplication,
    CreatePlatformEndpoint,
    DeleteEndpoint,
    DeletePlatformApplication,
    Done,
    GetEndpointAttributes,
    GetPlatformApplicationAttributes,
    ListEndpointsByPlatformApplication,
    ListPlatformApplications,
    SetEndpointAttributes,
)
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import PlatformApplicationChanged, PlatformApplicationDeleted, PlatformEndpointChanged

from ..conftest import running_broker
from .test_access import allow, call, key, refused

APPLICATION = "arn:aws:sns:us-east-1:000000000000:app/GCM/my-app"
CREDENTIAL = {"PlatformCredential": "server-key"}


async def test_applications_and_endpoints_are_rebuilt_from_the_store_at_start(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        assert await h.ok(CreatePlatformApplication("my-app", "GCM", CREDENTIAL)) == Arn(APPLICATION)
        endpoint = (await h.ok(CreatePlatformEndpoint(APPLICATION, "token-1", "alice"))).arn
        await h.ok(SetEndpointAttributes(endpoint, {"Enabled": "False"}))
    # Each change is a record in the log; the credential is in none of them.
    stored = [record for _, record in store.read_log() if isinstance(record, (PlatformApplicationChanged, PlatformEndpointChanged))]
    assert [type(record) for record in stored] == [PlatformApplicationChanged, PlatformEndpointChanged, PlatformEndpointChanged]
    assert "server-key" not in repr(stored)
    async with running_broker(store) as h:
        assert (await h.ok(GetPlatformApplicationAttributes(APPLICATION))).attributes == {"Enabled": "true"}
        attributes = (await h.ok(GetEndpointAttributes(endpoint))).attributes
        assert attributes == {"Enabled": "false", "Token": "token-1", "CustomUserData": "alice"}
        assert (await h.ok(CreatePlatformEndpoint(APPLICATION, "token-1", "alice"))).arn == endpoint  # still idempotent


async def test_deleting_an_application_deletes_its_endpoints_in_the_store(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        await h.ok(CreatePlatformApplication("my-app", "GCM", CREDENTIAL))
        other = (await h.ok(CreatePlatformApplication("other", "APNS", CREDENTIAL))).arn
        await h.ok(CreatePlatformEndpoint(APPLICATION, "token-1"))
        kept = (await h.ok(CreatePlatformEndpoint(other, "token-1"))).arn  # the same token in another application
        assert await h.ok(DeletePlatformApplication(APPLICATION)) == Done()
        assert await h.ok(DeletePlatformApplication(APPLICATION)) == Done()  # gone already: still a success
        assert await h.ok(DeleteEndpoint(APPLICATION.replace(":app/", ":endpoint/") + "/0")) == Done()
    assert [record.arn for _, record in store.read_log() if isinstance(record, PlatformApplicationDeleted)] == [APPLICATION]
    applications, endpoints = store.load_platform()
    assert [a.arn for a in applications] == [other]
    assert [e.arn for e in endpoints] == [kept]


async def test_listings_page_a_hundred_at_a_time(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreatePlatformApplication("my-app", "GCM", CREDENTIAL))
        made = {(await h.ok(CreatePlatformEndpoint(APPLICATION, f"token-{n}"))).arn for n in range(101)}
        first = await h.ok(ListEndpointsByPlatformApplication(APPLICATION))
        assert len(first.resources) == 100 and first.next_token is not None
        second = await h.ok(ListEndpointsByPlatformApplication(APPLICATION, first.next_token))
        assert second.next_token is None
        assert {r.arn for r in first.resources + second.resources} == made
        with pytest.raises(BrokerError, match="Invalid parameter: NextToken"):
            await h.ok(ListPlatformApplications("not a token we made"))


async def test_platform_operations_are_authorised_by_their_own_actions(autojump_clock):
    creator = key("creator", allow("sns:CreatePlatformApplication"))
    reader = key("reader", allow("sns:GetPlatformApplicationAttributes", APPLICATION))
    async with running_broker() as h:
        assert await call(h, creator, CreatePlatformApplication("my-app", "GCM", CREDENTIAL)) == Arn(APPLICATION)
        assert (await refused(h, creator, CreatePlatformEndpoint(APPLICATION, "t"))).code == "AuthorizationError"
        assert (await call(h, reader, GetPlatformApplicationAttributes(APPLICATION))).attributes == {"Enabled": "true"}
        other = APPLICATION.replace("my-app", "other")
        assert (await refused(h, reader, GetPlatformApplicationAttributes(other))).code == "AuthorizationError"
