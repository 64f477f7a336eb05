"""Cache objects on S3 only move forward (invariant 7), whoever writes them, racing or not."""

from __future__ import annotations

import random
import threading

import orjson
import pytest

from crm_pipeline.cache.publish import publish, remove
from crm_pipeline.cache.stores import StoreUnavailable, open_store
from crm_pipeline.cache.stores.s3 import S3Store, new_client
from crm_pipeline_tests.object_store.conftest import ACCESS_KEY, SECRET_KEY, S3Server, client_for

KEY = "customers/7.json"


def _object(store: S3Store, relative: str) -> tuple[dict, dict]:
    """(document, metadata) of the object as S3 has it."""
    got = store.client.get_object(Bucket=store.bucket, Key=store.key(relative))
    return orjson.loads(got["Body"].read()), got["Metadata"]


def test_a_document_is_one_object_with_its_watermark_in_metadata(s3_store):
    outcome = publish(s3_store.file(KEY), {"name": "a"}, watermark="20", schema_version=2)
    assert outcome.written and outcome.path == f"s3://{s3_store.bucket}/cache/{KEY}"
    document, metadata = _object(s3_store, KEY)
    assert document["name"] == "a" and document["watermark"] == "20"
    assert metadata == {"watermark": "20", "schema-version": "2"}
    assert outcome.size == len(s3_store.fetch(KEY).body)


def test_an_older_document_never_replaces_a_newer_one(s3_store):
    where = s3_store.file(KEY)
    assert publish(where, {"name": "new"}, watermark="20", schema_version=1).written
    refused = publish(where, {"name": "old"}, watermark="19", schema_version=1)
    assert not refused.written and refused.published_watermark == "20"
    assert _object(s3_store, KEY)[0]["name"] == "new"
    # The same watermark may be written again (e.g. a summary whose day rolled over).
    assert publish(where, {"name": "again"}, watermark="20", schema_version=1).written
    assert publish(where, {"name": "newer"}, watermark="21", schema_version=1).written
    assert _object(s3_store, KEY)[0]["name"] == "newer"


def test_a_removal_is_not_undone_by_a_slower_writer(s3_store):
    where = s3_store.file("customers/8.json")
    publish(where, {"name": "x"}, watermark="5", schema_version=1)
    assert remove(where, watermark="9")  # removed as of 9
    assert s3_store.fetch("customers/8.json") is None  # readers see no file
    assert s3_store.names("customers") == []
    # A writer whose snapshot (8) still saw the customer must not bring the file back.
    assert not publish(where, {"name": "x"}, watermark="8", schema_version=1).written
    assert s3_store.fetch("customers/8.json") is None
    assert not remove(where, watermark="8")
    # A later document (the id came back) replaces the tombstone.
    assert publish(where, {"name": "y"}, watermark="10", schema_version=1).written
    assert s3_store.names("customers") == ["8.json"]


class _LoseTheRace:
    """A boto3 client that lets `rival` publish between this writer's read and its PUT."""

    def __init__(self, client, rival) -> None:
        self._client = client
        self._rival = rival
        self.puts = 0

    def __getattr__(self, name):
        return getattr(self._client, name)

    def put_object(self, **kwargs):
        self.puts += 1
        if self._rival is not None:
            rival, self._rival = self._rival, None
            rival()
        return self._client.put_object(**kwargs)


@pytest.mark.parametrize("existing", [None, "5"], ids=["no-object-yet", "object-there"])
def test_a_writer_that_loses_the_race_reads_again_and_refuses_to_go_back(
    s3_server, s3_store, existing
):
    if existing:
        publish(s3_store.file(KEY), {"by": "first"}, watermark=existing, schema_version=1)
    newer = S3Store(s3_store.bucket, "cache", client=client_for(s3_server.url))

    def rival():  # published after the slow writer read the object, before its PUT
        assert publish(newer.file(KEY), {"by": "rival"}, watermark="9", schema_version=1).written

    client = _LoseTheRace(client_for(s3_server.url), rival)
    slow = S3Store(s3_store.bucket, "cache", client=client)
    outcome = publish(slow.file(KEY), {"by": "slow"}, watermark="7", schema_version=1)
    assert client.puts == 1  # its one PUT was refused (412); on reading again it stopped
    assert not outcome.written and outcome.published_watermark == "9"
    document, metadata = _object(s3_store, KEY)
    assert document["by"] == "rival" and metadata["watermark"] == "9"


def test_a_writer_that_loses_the_race_to_an_older_one_still_writes(s3_server, s3_store):
    older = S3Store(s3_store.bucket, "cache", client=client_for(s3_server.url))

    def rival():
        publish(older.file(KEY), {"by": "older"}, watermark="3", schema_version=1)

    client = _LoseTheRace(client_for(s3_server.url), rival)
    slow = S3Store(s3_store.bucket, "cache", client=client)
    assert publish(slow.file(KEY), {"by": "slow"}, watermark="7", schema_version=1).written
    assert client.puts == 2  # refused once, then written over the older one
    assert _object(s3_store, KEY)[0]["by"] == "slow"


def test_racing_writers_leave_the_newest_and_readers_never_see_it_go_back(s3_server, s3_store):
    watermarks = list(range(1, 121))
    random.Random(18).shuffle(watermarks)
    chunks = [watermarks[i::4] for i in range(4)]
    go = threading.Event()
    errors: list[BaseException] = []

    def writer(chunk: list[int]) -> None:
        # A store of its own per writer (as in separate processes), sharing the thread-safe client.
        store = S3Store(s3_store.bucket, "cache", client=client_for(s3_server.url))
        go.wait()
        try:
            for w in chunk:
                publish(store.file(KEY), {"w": w}, watermark=str(w), schema_version=1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    go.set()
    seen = []
    while any(t.is_alive() for t in threads):
        fetched = s3_store.fetch(KEY)
        if fetched is not None:
            seen.append(int(orjson.loads(fetched.body)["watermark"]))
    for t in threads:
        t.join()
    assert errors == []
    assert seen == sorted(seen)
    document, metadata = _object(s3_store, KEY)
    assert document["w"] == 120 and metadata["watermark"] == "120"


def test_an_unchanged_object_is_not_sent_again(s3_store):
    publish(s3_store.file(KEY), {"v": 1}, watermark="1", schema_version=1)
    first = s3_store.fetch(KEY)
    again = s3_store.fetch(KEY, first.signature)
    assert again.body is None and again.signature == first.signature  # a 304
    publish(s3_store.file(KEY), {"v": 2}, watermark="2", schema_version=1)
    changed = s3_store.fetch(KEY, first.signature)
    assert changed.body is not None and changed.signature != first.signature


def test_an_unreachable_store_says_so_without_credentials(bucket, caplog):
    server = S3Server()
    store = S3Store(bucket, "cache", client=new_client(server.url))
    server.stop()
    with pytest.raises(StoreUnavailable) as info:
        publish(store.file(KEY), {"v": 1}, watermark="1", schema_version=1)
    with pytest.raises(StoreUnavailable):
        store.fetch(KEY)
    message = str(info.value)
    assert f"s3://{bucket}/cache" in message and "unreachable" in message
    for secret in (SECRET_KEY, ACCESS_KEY):
        assert secret not in message and secret not in caplog.text


def test_locations_open_the_right_store(s3_server, tmp_path):
    assert open_store(tmp_path).file(KEY) == tmp_path / KEY
    assert open_store(str(tmp_path)).url == str(tmp_path)
    s3 = open_store("s3://crm-bucket/some/prefix/", endpoint_url=s3_server.url)
    assert isinstance(s3, S3Store) and s3.key(KEY) == f"some/prefix/{KEY}"
    assert open_store("s3://crm-bucket/some/prefix", endpoint_url=s3_server.url) is s3
