"""The Batch API's file store, both adapters through the same tests: a folder (the local
stack's) and S3 over HTTP (moto's server, the same boto3 calls as AWS)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from gateway.adapters.object_store import FolderStore, ObjectStore, S3Store
from infra.local.services import Service


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "folder":
        yield FolderStore(tmp_path / "files")
        return
    moto: Service = request.getfixturevalue("moto")
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto.port}", region_name="us-east-1")
    bucket = f"files-{tmp_path.name.lower().replace('_', '-')}"[:60]
    client.create_bucket(Bucket=bucket)
    yield S3Store(client, bucket)


def test_an_object_is_written_read_replaced_and_deleted(store: ObjectStore) -> None:
    assert store.get("files/ten_a/file-1.jsonl") is None
    store.put("files/ten_a/file-1.jsonl", b'{"a": 1}\n')
    assert store.get("files/ten_a/file-1.jsonl") == b'{"a": 1}\n'
    store.put("files/ten_a/file-1.jsonl", b"")  # an empty chunk of answers is an object too
    assert store.get("files/ten_a/file-1.jsonl") == b""
    store.delete("files/ten_a/file-1.jsonl")
    store.delete("files/ten_a/file-1.jsonl")  # deleting what is gone is fine
    assert store.get("files/ten_a/file-1.jsonl") is None


@pytest.mark.parametrize("name", ["", "/etc/passwd", "files/../../x", "files//x", "./x"])
def test_a_name_that_could_leave_its_place_is_refused(store: ObjectStore, name: str) -> None:
    with pytest.raises(ValueError, match="not an object name"):
        store.put(name, b"x")


def test_a_folder_write_leaves_no_partial_object(tmp_path: Path) -> None:
    store = FolderStore(tmp_path)
    store.put("a/b.jsonl", b"x" * 1000)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.jsonl"]  # the temporary file was renamed


def test_a_link_serves_the_object_until_it_expires_and_only_as_signed(store: ObjectStore) -> None:
    import requests

    from infra.local.file_server import serve
    from infra.local.services import free_port

    store.put("files/ten_a/big.jsonl", b"line\n" * 10)
    if isinstance(store, FolderStore):  # the local stack's file server stands in for S3's links
        store = FolderStore(store.root, url_base=f"http://127.0.0.1:{(port := free_port())}", secret=b"k" * 32)
        server = serve(store, port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    link = store.url("files/ten_a/big.jsonl", expires_s=60)
    assert link is not None
    assert requests.get(link, timeout=5).content == b"line\n" * 10
    if isinstance(store, FolderStore):
        assert requests.get(link.replace("big.jsonl", "other.jsonl"), timeout=5).status_code == 403
        assert requests.get(link[:-4] + "0000", timeout=5).status_code == 403
        expired = store.url("files/ten_a/big.jsonl", expires_s=-1)
        assert expired is not None and requests.get(expired, timeout=5).status_code == 403
        server.shutdown()
