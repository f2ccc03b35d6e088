"""The S3-compatible storage backend against moto's S3 server on 127.0.0.1.

The backend itself (keys, prefix, multipart, delete by prefix, stale staging), then a real
`mediarelay serve` per URL mode: sandbox results (video, poster, thumbnail, sprite sheet) land in the
bucket with their checksums, `/files/…` answers with a presigned redirect or streams the object (Range,
If-None-Match), the OpenAI content endpoint streams in both modes, uploads are stored in the bucket, a
deleted task's objects are gone, and nothing but staging is ever written under the local files directory.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image

from conftest import Server, free_port, start_server, wait_until
from mediarelay.storage.base import RangeNotSatisfiable, RemoteFile
from mediarelay.storage.s3 import S3Options, S3Storage

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
KEYS = {"access_key_id": "testing", "secret_access_key": "testing"}
REGION = "us-east-1"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS)


def new_bucket(s3: Any) -> str:
    name = f"mr-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def keys_in(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(item["Key"] for item in found)


def staged(storage: S3Storage, data: bytes, suffix: str = ".bin") -> Path:
    path = storage.new_staging_path(suffix)
    path.write_bytes(data)
    return path


# -- the backend ---------------------------------------------------------------------------------------


def test_backend_put_locate_fetch_remove(endpoint: str, s3: Any, tmp_path: Path) -> None:
    bucket = new_bucket(s3)
    opts = S3Options(
        bucket=bucket,
        endpoint_url=endpoint,
        region=REGION,
        prefix="/relay/",
        **KEYS,
        multipart_threshold=5 * 1024 * 1024,
    )
    storage = S3Storage(opts, tmp_path / "staging")
    data = os.urandom(1000)
    src = staged(storage, data, ".mp4")
    assert storage.put("task1/video-0.mp4", src) == (len(data), hashlib.sha256(data).hexdigest())
    assert not src.exists()  # uploaded, then removed
    head = s3.head_object(Bucket=bucket, Key="relay/task1/video-0.mp4")
    assert (
        head["ContentType"] == "video/mp4" and head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    )
    assert "immutable" in head["CacheControl"]
    assert storage.exists("task1/video-0.mp4") and not storage.exists("task1/nope.mp4")

    found = storage.locate("task1/video-0.mp4")
    assert isinstance(found, RemoteFile) and found.size == 1000 and found.redirect_url is None
    whole = found.fetch(None)
    assert (whole.status, whole.content_range, b"".join(whole.chunks)) == (200, None, data)
    part = found.fetch("bytes=10-19")
    assert (part.status, part.length, part.content_range) == (206, 10, "bytes 10-19/1000")
    assert b"".join(part.chunks) == data[10:20]
    with pytest.raises(RangeNotSatisfiable):
        found.fetch("bytes=5000-")
    for bad in ("../x", ".staging/x", "a//b", "a/../b", "", "/abs"):
        assert storage.locate(bad) is None
        with pytest.raises(ValueError):
            storage.put(bad, staged(storage, b"x"))
    assert storage.locate("task1/none.jpg") is None

    # Big files go up in parts.
    big = os.urandom(6 * 1024 * 1024)
    size, sha = storage.put("task1/image-0.png", staged(storage, big))
    assert (size, sha) == (len(big), hashlib.sha256(big).hexdigest())
    assert "-" in s3.head_object(Bucket=bucket, Key="relay/task1/image-0.png")["ETag"]  # a multipart ETag

    storage.put("task10/video-0.mp4", staged(storage, b"other"))
    storage.remove("task1/image-0.png")
    storage.remove("task1/image-0.png")  # twice: no error
    assert keys_in(s3, bucket) == ["relay/task1/video-0.mp4", "relay/task10/video-0.mp4"]
    storage.remove_tree("task1")  # not task10: the prefix ends with a slash
    assert keys_in(s3, bucket) == ["relay/task10/video-0.mp4"]
    with pytest.raises(ValueError):
        storage.remove_tree("task10/video-0.mp4")


def test_clear_staging_keeps_fresh_files(endpoint: str, s3: Any, tmp_path: Path) -> None:
    """Several steps (and nodes' restarts) may overlap: only files older than an hour are leftovers."""
    opts = S3Options(bucket=new_bucket(s3), endpoint_url=endpoint, region=REGION, **KEYS)
    storage = S3Storage(opts, tmp_path / "staging")
    fresh = staged(storage, b"being written")
    old = staged(storage, b"left by a killed step")
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    assert storage.clear_staging() == 1
    assert fresh.exists() and not old.exists()


# -- a real server per URL mode -----------------------------------------------------------------------


def serve_s3(tmp_path: Path, endpoint: str, bucket: str, mode: str) -> Server:
    env = {
        "MEDIARELAY_STORAGE__BACKEND": "s3",
        "MEDIARELAY_STORAGE__S3__ENDPOINT_URL": endpoint,
        "MEDIARELAY_STORAGE__S3__BUCKET": bucket,
        "MEDIARELAY_STORAGE__S3__REGION": REGION,
        "MEDIARELAY_STORAGE__S3__PREFIX": "media",
        "MEDIARELAY_STORAGE__S3__URL_MODE": mode,
        "MEDIARELAY_STORAGE__S3__PRESIGN_SECONDS": "600",
    }
    if mode == "proxy":  # credentials by env references…
        env |= {
            "MEDIARELAY_STORAGE__S3__ACCESS_KEY_ID": "env:TEST_S3_KEY",
            "MEDIARELAY_STORAGE__S3__SECRET_ACCESS_KEY": "env:TEST_S3_SECRET",
            "TEST_S3_KEY": "testing",
            "TEST_S3_SECRET": "testing",
            "AWS_ACCESS_KEY_ID": "",
            "AWS_SECRET_ACCESS_KEY": "",
        }
    else:  # …or boto3's own chain (the standard AWS variables)
        env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return start_server(tmp_path, **env)


def local_files(server: Server) -> list[Path]:
    return [p for p in (server.data_dir / "files").rglob("*") if p.is_file()]


@pytest.mark.parametrize("mode", ["proxy", "presigned"])
def test_results_in_the_bucket_served_and_deleted(mode: str, endpoint: str, s3: Any, tmp_path: Path) -> None:
    bucket = new_bucket(s3)
    server = serve_s3(tmp_path, endpoint, bucket, mode)
    try:
        with server.client(server.new_key()) as api:
            check_server(server, api, s3, bucket, mode)
    finally:
        server.stop()


def check_server(server: Server, api: httpx.Client, s3: Any, bucket: str, mode: str) -> None:
    resp = api.post("/v1/videos", json={"prompt": "a lighthouse", "seconds": "4"})
    assert resp.status_code == 200, resp.text
    public_id = resp.json()["id"]
    done = wait_until(
        lambda: api.get(f"/v1/tasks/{public_id}").json(), lambda v: v["status"] == "succeeded", timeout=40
    )
    task_id = done["id"]
    outputs = {o["role"]: o for o in done["outputs"]}
    assert set(outputs) == {"video", "poster", "thumbnail", "spritesheet"}

    # The results are objects under the prefix, with the checksums the task reports.
    names = keys_in(s3, bucket, f"media/{task_id}/")
    assert names == sorted(f"media/{task_id}/{o['url'].rsplit('/', 1)[1]}" for o in outputs.values())
    objects: dict[str, bytes] = {}
    for role, out in outputs.items():
        name = "media/" + out["url"].split("/files/", 1)[1]
        obj = s3.get_object(Bucket=bucket, Key=name)
        data = obj["Body"].read()
        assert len(data) == out["bytes"] and hashlib.sha256(data).hexdigest() == out["sha256"], role
        assert obj["ContentType"] == out["mime"] and obj["Metadata"]["sha256"] == out["sha256"]
        objects[role] = data

    video, poster = outputs["video"], outputs["poster"]
    plain = httpx.Client(timeout=30)  # as a browser would: no key, the URL is the capability
    if mode == "presigned":
        moved = plain.get(video["url"])
        assert moved.status_code == 302 and moved.headers["location"].startswith(s3.meta.endpoint_url)
        assert "X-Amz-Signature=" in moved.headers["location"] and "private" in moved.headers["cache-control"]
        plain = httpx.Client(timeout=30, follow_redirects=True)
    for role, out in outputs.items():
        got = plain.get(out["url"])
        assert got.status_code == 200 and got.content == objects[role], role
        assert got.headers["content-type"] == out["mime"]
        assert got.headers["cache-control"] == "public, max-age=31536000, immutable"
    whole = plain.get(video["url"])
    part = plain.get(video["url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == objects["video"][100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{video['bytes']}"
    tail = plain.get(video["url"], headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == objects["video"][-50:]
    etag = whole.headers["etag"]
    cached = plain.get(video["url"], headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    if mode == "proxy":
        head = plain.head(poster["url"])
        assert head.status_code == 200 and int(head.headers["content-length"]) == poster["bytes"]
        assert head.headers["etag"] and head.content == b""
        beyond = plain.get(video["url"], headers={"Range": f"bytes={video['bytes'] + 10}-"})
        assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{video['bytes']}"
    # [MR] mediarelay answers If-None-Match itself in both modes (the object's ETag): no redirect needed.
    direct = httpx.get(video["url"], headers={"If-None-Match": etag})
    assert direct.status_code == 304 and direct.headers["etag"] == etag

    # Unknown names: the same 404 as any missing file.
    missing = httpx.get(f"{server.base_url}/files/{task_id}/nope.mp4")
    hidden = httpx.get(f"{server.base_url}/files/{task_id}/.staging")
    assert missing.status_code == hidden.status_code == 404 and missing.json() == hidden.json()

    # The OpenAI content endpoint always streams the bytes (the API it mimics never redirects).
    content = api.get(f"/v1/videos/{public_id}/content")
    assert content.status_code == 200 and content.content == objects["video"]
    assert content.headers["etag"] == f'"{video["sha256"][:32]}"'
    ranged = api.get(f"/v1/videos/{public_id}/content", headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 206 and ranged.content == objects["video"][:100]
    again = api.get(f"/v1/videos/{public_id}/content", headers={"If-None-Match": content.headers["etag"]})
    assert again.status_code == 304
    sheet = api.get(f"/v1/videos/{public_id}/content", params={"variant": "spritesheet"})
    assert sheet.status_code == 200 and sheet.content == objects["spritesheet"]

    # An upload is stored in the bucket and served at mediarelay's URL.
    png = tiny_png()
    files = {"input_reference": ("frame.png", png, "image/png")}
    uploaded = api.post("/v1/videos", data={"prompt": "from a frame"}, files=files)
    assert uploaded.status_code == 200, uploaded.text
    [upload] = [k for k in keys_in(s3, bucket, "media/inputs-")]
    assert upload.endswith("/frame.png")
    assert plain.get(f"{server.base_url}/files/{upload.removeprefix('media/')}").content == png

    # Deleting the tasks removes their objects (results and uploads), nothing else.
    assert api.delete(f"/v1/videos/{uploaded.json()['id']}").status_code == 200
    assert keys_in(s3, bucket, "media/inputs-") == []
    assert api.delete(f"/v1/videos/{public_id}").status_code == 200
    assert keys_in(s3, bucket) == []
    assert httpx.get(video["url"]).status_code == 404

    # Nothing but (emptied) staging under the local files directory.
    assert local_files(server) == []
    assert [p.name for p in (server.data_dir / "files").iterdir()] == [".staging"]
    plain.close()


def tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 36), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


def test_settings_need_a_bucket_and_take_only_env_references(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from mediarelay.config import StorageSettings

    assert StorageSettings().backend == "local"
    with pytest.raises(ValidationError, match="bucket is required"):
        StorageSettings.model_validate({"backend": "s3"})
    with pytest.raises(ValidationError) as err:
        StorageSettings.model_validate(
            {"backend": "s3", "s3": {"bucket": "b", "secret_access_key": "hunter2"}}
        )
    assert "hunter2" not in str(err.value)  # a secret pasted by mistake is never echoed
