"""The HTTP client the admin and finance commands share: base URL and key from flags or
the environment (MAAS_API_URL, MAAS_API_KEY; locally .maas/admin_key), errors printed in
plain words, tables for people and JSON with --json."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3

DEFAULT_URL = "http://127.0.0.1:3000"
LOCAL_KEY_FILE = Path(".maas/admin_key")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("MAAS_API_URL", DEFAULT_URL),
                        help="API base URL (env MAAS_API_URL)")
    parser.add_argument("--key", default=None, help="API key (env MAAS_API_KEY; locally .maas/admin_key)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


class ApiClient:
    def __init__(self, url: str, key: str, *, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.http = urllib3.PoolManager(retries=urllib3.Retry(total=3, backoff_factor=0.5,
                                                              status_forcelist=(502, 503, 504)),
                                        timeout=urllib3.Timeout(connect=5.0, read=timeout_s))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ApiClient:
        key = args.key or os.environ.get("MAAS_API_KEY")
        if not key and LOCAL_KEY_FILE.exists():
            key = LOCAL_KEY_FILE.read_text().strip()
        if not key:
            raise SystemExit("maas: no API key: pass --key or set MAAS_API_KEY")
        return cls(args.url, key)

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: dict[str, Any] | None = None,
                idempotency_key: str | None = None) -> tuple[int, bytes, dict[str, str]]:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = f"{self.url}{path}" + (f"?{urlencode(query)}" if query else "")
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "application/json"}
        if idempotency_key:
            # the retries below (502/503/504) then repeat the same call, never a second one
            headers["Idempotency-Key"] = idempotency_key
        payload = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            payload = json.dumps(body).encode()
        try:
            response = self.http.request(method, url, body=payload, headers=headers)
        except urllib3.exceptions.HTTPError as error:
            raise ApiError(0, f"cannot reach {self.url}: {error}") from None
        if response.status >= 400:
            try:
                message = json.loads(response.data)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.data[:200].decode(errors="replace")
            raise ApiError(response.status, message)
        return response.status, response.data, dict(response.headers)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        _, data, _ = self.request(method, path, **kwargs)
        return json.loads(data) if data else None

    def pages(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """Every item of a paginated list, following next_cursor."""
        params = dict(params or {})
        while True:
            page = self.json("GET", path, params=params)
            yield from page["data"]
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]


def fail(error: ApiError) -> int:
    print(f"maas: {error}", file=sys.stderr)
    return 1


def with_client(args: argparse.Namespace, action: Callable[[ApiClient], int]) -> int:
    """Runs a command against the API; an API error becomes a one-line message and exit 1."""
    try:
        return action(ApiClient.from_args(args))
    except ApiError as error:
        return fail(error)


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[("" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def emit(args: argparse.Namespace, payload: Any, rows: list[dict[str, Any]], columns: list[str]) -> None:
    if args.json:
        json.dump(payload, sys.stdout, indent=2)
        print()
    else:
        print_table(rows, columns)
