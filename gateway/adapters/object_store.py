"""Where the Batch API's files live: S3 in AWS (the stack's bucket, encrypted with its KMS
key, expired by a lifecycle rule), a folder locally. One port, two adapters, the same tests
(tests/integration/test_object_store.py runs both, S3 through moto's server over HTTP)."""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote


class ObjectStore(Protocol):
    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes | None:
        """None when there is no such object."""
        ...

    def delete(self, name: str) -> None:
        """Deleting what does not exist is fine."""
        ...

    def url(self, name: str, *, expires_s: int) -> str | None:
        """A URL that serves the object to whoever holds it, for ``expires_s`` (what a file
        too large for a Lambda's answer is sent to); None where the store serves none."""
        ...


def _checked(name: str) -> str:
    parts = name.split("/")
    if not name or any(part in ("", ".", "..") for part in parts) or name.startswith("/"):
        raise ValueError(f"not an object name: {name!r}")
    return name


class FolderStore:
    """Objects as files under ``root``; a write is a rename, so a reader (or a crash) never
    sees half an object. With ``url_base`` and ``secret`` it signs URLs the way S3 presigns
    them (the object's name and an expiry, HMAC-SHA256), which infra/local/file_server.py
    checks with ``signed``."""

    def __init__(self, root: str | Path, *, url_base: str | None = None, secret: bytes | None = None) -> None:
        self.root = Path(root)
        self.url_base = url_base.rstrip("/") if url_base else None
        self._secret = secret

    def _signature(self, name: str, expires: int) -> str:
        assert self._secret is not None
        return hmac.new(self._secret, f"{name}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, name: str, *, expires_s: int) -> str | None:
        if not self.url_base or not self._secret:
            return None
        expires = int(time.time()) + expires_s
        return f"{self.url_base}/{quote(_checked(name))}?expires={expires}&signature={self._signature(name, expires)}"

    def signed(self, name: str, expires: str, signature: str) -> bytes | None:
        """The object a URL of ``url`` names, if its signature holds and it has not expired."""
        if not self._secret or not expires.isdigit() or int(expires) < time.time():
            return None
        if not hmac.compare_digest(self._signature(name, int(expires)), signature):
            return None
        return self.get(name)

    def _path(self, name: str) -> Path:
        return self.root / _checked(name)

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def get(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)


class S3Store:
    """Objects in one bucket; the bucket's default encryption (the stack's KMS key) applies."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + _checked(name), Body=data)

    def get(self, name: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + _checked(name))
        except self.client.exceptions.NoSuchKey:
            return None
        return bytes(response["Body"].read())

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + _checked(name))

    def url(self, name: str, *, expires_s: int) -> str:
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.prefix + _checked(name)}, ExpiresIn=expires_s))
