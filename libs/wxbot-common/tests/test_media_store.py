"""The media blob store against a real nats-server: round trip, digest, TTL, limits, clear errors."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from wxbot_common.media.store import (
    MediaCorruptError,
    MediaError,
    MediaNotFoundError,
    MediaRef,
    MediaStore,
    MediaTooLargeError,
)
from wxbot_common.nats.subjects import MEDIA_BUCKET
from wxbot_common.nats.topology import StreamSettings, ensure_topology
from wxbot_devkit.launch import nats_client

pytestmark = pytest.mark.timeout(60)

AMR = b"#!AMR\n" + bytes(range(256)) * 4
BIG = bytes(range(256)) * 2048  # 512 KiB: four object-store chunks


@pytest.fixture(scope="module")
async def nc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    async with nats_client(Path(tmp_path_factory.mktemp("nats"))) as client:
        await ensure_topology(client.jetstream(), StreamSettings(consumers=(), media_ttl_s=1.0, media_bucket="SHORT"))
        yield client


@pytest.fixture
def store(nc: Client) -> MediaStore:
    return MediaStore(nc.jetstream(), max_bytes=1024 * 1024)


async def test_put_get_round_trip_with_digest(store: MediaStore) -> None:
    ref = await store.put(BIG, "image/png")
    assert ref == MediaRef(f"sha256-{hashlib.sha256(BIG).hexdigest()}", len(BIG), "image/png", ref.sha256)
    assert ref.sha256 == hashlib.sha256(BIG).hexdigest()
    assert await store.get(ref) == BIG
    assert await store.get(ref.name) == BIG
    assert await store.info(ref.name) == ref
    assert MediaRef.from_proto(ref.to_proto()) == ref


async def test_same_bytes_same_reference_and_named_puts(store: MediaStore) -> None:
    first, again = await store.put(AMR, "audio/amr"), await store.put(AMR, "audio/amr")
    assert first == again
    named = await store.put(AMR, "audio/amr", name="evt-123-voice")
    assert named.name == "evt-123-voice" and named.sha256 == first.sha256
    assert await store.get(named) == AMR


async def test_empty_file(store: MediaStore) -> None:
    ref = await store.put(b"", "audio/amr", name="empty")
    assert ref.size == 0
    assert await store.get(ref) == b""


async def test_too_large_is_refused_with_a_clear_error(store: MediaStore) -> None:
    with pytest.raises(MediaTooLargeError, match=r"2097152 bytes, over the limit of 1048576 bytes \(MEDIA_MAX_BYTES\)"):
        await store.put(b"x" * 2 * 1024 * 1024, "image/jpeg", name="too-big")
    with pytest.raises(MediaNotFoundError):  # nothing was stored
        await store.info("too-big")


async def test_reading_a_file_over_the_limit_is_refused(nc: Client) -> None:
    roomy = MediaStore(nc.jetstream(), max_bytes=len(BIG))
    ref = await roomy.put(BIG, "image/png", name="big-one")
    with pytest.raises(MediaTooLargeError):
        await MediaStore(nc.jetstream(), max_bytes=1000).get(ref)


async def test_missing_object_gives_a_clear_error(store: MediaStore) -> None:
    with pytest.raises(MediaNotFoundError, match=r"media 'no-such' not found: never stored, or expired"):
        await store.get("no-such")
    with pytest.raises(MediaNotFoundError):
        await store.info("no-such")


async def test_replaced_file_does_not_match_the_old_reference(store: MediaStore) -> None:
    old = await store.put(b"first version!", "text/plain", name="replaced")
    await store.put(b"second version", "text/plain", name="replaced")
    with pytest.raises(MediaCorruptError, match="sha256 differs"):
        await store.get(old)
    shorter = await store.put(b"v3", "text/plain", name="replaced")
    with pytest.raises(MediaCorruptError, match="2 bytes in the store, the reference says 14"):
        await store.get(old)
    assert await store.get(shorter) == b"v3"


async def test_deleted_file_is_gone(store: MediaStore) -> None:
    ref = await store.put(b"to be deleted", "text/plain", name="deleted")
    await store.delete(ref.name)
    await store.delete(ref.name)  # twice is fine
    with pytest.raises(MediaNotFoundError):
        await store.get(ref)


async def test_files_expire_after_the_ttl(nc: Client) -> None:
    short = MediaStore(nc.jetstream(), bucket="SHORT")
    ref = await short.put(BIG, "image/png")
    assert await short.get(ref) == BIG
    # its chunks and then its description (written last, so it expires last) age out of the stream
    deadline = time.monotonic() + 20
    while True:
        try:
            await short.info(ref.name)
        except MediaNotFoundError:
            break
        assert time.monotonic() < deadline, "the file outlived its 1 s TTL by far"
        await asyncio.sleep(0.05)  # poll interval
    with pytest.raises(MediaNotFoundError):
        await short.get(ref)


async def test_a_changed_ttl_updates_the_bucket(nc: Client) -> None:
    js = nc.jetstream()
    await ensure_topology(js, StreamSettings(consumers=(), media_ttl_s=3600.0, media_bucket="RETUNED"))
    await ensure_topology(js, StreamSettings(consumers=(), media_ttl_s=7200.0, media_bucket="RETUNED"))
    info = await js.stream_info("OBJ_RETUNED")
    assert info.config.max_age == 7200.0
    assert (await js.stream_info(f"OBJ_{MEDIA_BUCKET}")).config.max_age == 3 * 86400.0


async def test_missing_bucket_says_how_to_create_it(nc: Client) -> None:
    with pytest.raises(MediaError, match="topology ensure"):
        await MediaStore(nc.jetstream(), bucket="NOPE").put(b"data!", "text/plain")
