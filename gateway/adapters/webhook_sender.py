"""Sending one webhook request, safely: the URL is checked (``gateway.domain.webhooks``), its
host resolved and every address it resolves to checked, and the connection made to the
address that was checked (a name that resolves elsewhere a moment later, DNS rebinding,
changes nothing); TLS still verifies the certificate against the host name (SNI). One
attempt, a short timeout, no redirects followed, at most ``MAX_ANSWER_BYTES`` of the answer
read.

With ``allow_local_http`` (the local stack, whose receivers are ``http://127.0.0.1``)
loopback addresses pass the check too; private, link-local and metadata addresses never do."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import urllib3

from gateway.domain.webhooks import Target, UnsafeWebhookUrl, address_refusal, parse_target

Resolver = Callable[[str, int], list[str]]
MAX_ANSWER_BYTES = 64 * 1024
USER_AGENT = "maas-gateway-webhooks/1"


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an address literal resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UnsafeWebhookUrl(f"host {host!r} does not resolve ({error})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class Checked:
    target: Target
    address: str  # the address to connect to, one the checks accepted


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None  # None: no HTTP answer
    error: str | None
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    def __init__(self, *, allow_local_http: bool, timeout_s: float, resolver: Resolver = system_resolver) -> None:
        self.allow_local_http = allow_local_http
        self.timeout = urllib3.Timeout(connect=min(timeout_s, 3.0), read=timeout_s)
        self.resolver = resolver

    def check(self, url: str) -> Checked:
        """Where a request to ``url`` would go, or ``UnsafeWebhookUrl``: at creation and
        again before every attempt."""
        target = parse_target(url, allow_local_http=self.allow_local_http)
        addresses = self.resolver(target.host, target.port)
        if not addresses:
            raise UnsafeWebhookUrl(f"host {target.host!r} does not resolve")
        # Every address, not just the first: a name with one public and one private address
        # is refused rather than left to chance.
        for address in addresses:
            reason = address_refusal(address, allow_loopback=self.allow_local_http)
            if reason:
                raise UnsafeWebhookUrl(f"resolves to a non-public address: {reason}")
        return Checked(target=target, address=addresses[0])

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        started = time.monotonic()

        def outcome(status: int | None, error: str | None) -> Outcome:
            return Outcome(status, error, round((time.monotonic() - started) * 1000))

        try:
            checked = self.check(url)
        except UnsafeWebhookUrl as error:
            return outcome(None, f"refused: the URL {error}")
        target = checked.target
        pool: urllib3.HTTPConnectionPool
        if target.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(checked.address, target.port, timeout=self.timeout, retries=False,
                                               maxsize=1, server_hostname=target.host, assert_hostname=target.host,
                                               cert_reqs="CERT_REQUIRED")
        else:
            pool = urllib3.HTTPConnectionPool(checked.address, target.port, timeout=self.timeout, retries=False,
                                              maxsize=1)
        request_headers = {"Host": target.host_header, "User-Agent": USER_AGENT, "Connection": "close", **headers}
        try:
            response = pool.urlopen("POST", target.path, body=body, headers=request_headers, redirect=False,
                                    retries=False, preload_content=False, assert_same_host=False)
            try:
                response.read(MAX_ANSWER_BYTES)
            finally:
                response.release_conn()
        except urllib3.exceptions.NewConnectionError as error:  # (a ConnectTimeoutError subclass in urllib3 2)
            return outcome(None, f"cannot connect: {str(error.__cause__ or error)[:200]}")
        except urllib3.exceptions.TimeoutError:
            return outcome(None, f"timed out after {self.timeout.read_timeout}s")
        except urllib3.exceptions.HTTPError as error:
            return outcome(None, f"{type(error).__name__}: {str(error)[:200]}")
        finally:
            pool.close()
        status = response.status
        if 300 <= status < 400:
            return outcome(status, "redirects are not followed")
        return outcome(status, None if 200 <= status < 300 else f"HTTP {status}")
