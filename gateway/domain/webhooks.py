"""Webhooks (CONTRACT.md §8): how a delivery is signed, when a failed one is tried again, and
which target URLs are acceptable. Pure rules: resolving names and sending requests are the
adapters' (``gateway.adapters.webhook_sender``).

Signatures follow Stripe's scheme: ``Maas-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<raw body>">`` with the webhook's secret; receivers check it and dedupe on the event id."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from gateway.domain.events import EventType

SIGNATURE_HEADER = "Maas-Signature"
MAX_URL_LENGTH = 2048

# Retries: 1 s, 2 s, 4 s ... doubling up to an hour apart, each shortened by up to half at
# random (so receivers that failed together are not retried together); a delivery not made
# within a day of its first attempt is given up.
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 3600.0
GIVE_UP_AFTER_S = 86_400.0

# Hosts the local stack may deliver to over plain http.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class UnsafeWebhookUrl(ValueError):
    """A webhook URL we refuse to call: not https, malformed, or reaching an address that is
    not on the public internet (SSRF)."""


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Maas-Signature`` header value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, body: bytes, header: str, *, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver does: the header's timestamp is recent and one of its ``v1`` MACs is
    the body's (constant-time comparison)."""
    parts = [part.partition("=") for part in header.split(",")]
    stamps = [value for name, _, value in parts if name.strip() == "t"]
    macs = [value.strip() for name, _, value in parts if name.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or not macs:
        return False
    timestamp = int(stamps[0])
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, mac) for mac in macs)


def retry_delay(attempts: int, jitter: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt; ``jitter`` in [0, 1)."""
    base = min(FIRST_RETRY_S * 2.0 ** min(max(attempts - 1, 0), 32), MAX_RETRY_S)
    return base * (1 - jitter / 2)


def next_attempt_at(*, first_attempt_at: float, now: float, attempts: int, jitter: float) -> float | None:
    """When to try again after ``attempts`` failures, or None: give up (past a day)."""
    at = now + retry_delay(attempts, jitter)
    return None if at - first_attempt_at > GIVE_UP_AFTER_S else at


@dataclass(frozen=True, slots=True)
class Target:
    """Where a webhook URL points: what to connect to and what to ask for."""

    scheme: str  # "https", or "http" on the local stack
    host: str  # a name or an address, without brackets
    port: int
    path: str  # path and query, as sent on the request line
    host_header: str  # the Host header (host, and the port when not the scheme's default)


def parse_target(url: str, *, allow_local_http: bool) -> Target:
    """The target of a webhook URL, or ``UnsafeWebhookUrl`` saying why not. https only; with
    ``allow_local_http`` (the local stack) also ``http://127.0.0.1``, ``http://localhost``
    and ``http://[::1]``, any port."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise UnsafeWebhookUrl(f"must be an absolute https URL of at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url) or not url.isascii():
        raise UnsafeWebhookUrl("must not contain spaces, control or non-ASCII characters (use punycode)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeWebhookUrl(f"is not a valid URL ({error})") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not host:
        raise UnsafeWebhookUrl("must name a host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeWebhookUrl("must not carry credentials (user:password@)")
    if scheme == "http":
        if not (allow_local_http and host in LOOPBACK_HOSTS):
            local = " (or http://127.0.0.1 and http://localhost on the local stack)" if allow_local_http else ""
            raise UnsafeWebhookUrl(f"must use https{local}")
    elif scheme != "https":
        raise UnsafeWebhookUrl("must use https")
    if port == 0:
        raise UnsafeWebhookUrl("must not use port 0")
    default_port = 443 if scheme == "https" else 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown_host = f"[{host}]" if ":" in host else host
    host_header = shown_host if port in (None, default_port) else f"{shown_host}:{port}"
    return Target(scheme=scheme, host=host, port=port or default_port, path=path, host_header=host_header)


# Address blocks ``ipaddress`` counts as global that still reach somewhere private.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_refusal(address: str, *, allow_loopback: bool = False) -> str | None:
    """Why a webhook may not be delivered to this IP address, or None when it is a public,
    unicast internet address. Private, loopback, link-local (cloud metadata at
    169.254.169.254 and fd00:ec2::254 among them), shared (100.64/10), multicast, reserved and
    unspecified addresses are refused, and so are IPv6 forms that embed one of those.
    ``allow_loopback`` (the local stack, whose receivers run on this machine) lets loopback
    addresses through, and only those."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if allow_loopback and ip.is_loopback:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            reason = address_refusal(str(embedded), allow_loopback=allow_loopback)
            return f"{ip} embeds {reason}" if reason else None
    for flag, what in (("is_loopback", "loopback"), ("is_link_local", "link-local (cloud metadata)"),
                       ("is_multicast", "multicast"), ("is_unspecified", "unspecified"),
                       ("is_reserved", "reserved"), ("is_private", "private")):
        if getattr(ip, flag):
            return f"{ip} is a {what} address"
    if not ip.is_global:
        return f"{ip} is not a public internet address"
    return None


# -- records -------------------------------------------------------------------------------
def _rfc3339_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Webhook:
    """A receiver: its URL and the event types it subscribes to (its secret is kept apart)."""

    id: str  # "wh_" + 24 hex digits
    url: str
    events: tuple[EventType, ...]
    created_at: str  # RFC 3339

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "object": "webhook", "url": self.url, "events": [str(e) for e in self.events],
                "created_at": self.created_at}


DeliveryStatus = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True, slots=True)
class Attempt:
    at_ms: int
    status_code: int | None  # None: no HTTP answer (refused, unreachable, timed out)
    error: str | None
    duration_ms: int

    def public(self) -> dict[str, Any]:
        return {"at": _rfc3339_ms(self.at_ms), "status_code": self.status_code, "error": self.error,
                "duration_ms": self.duration_ms}


@dataclass(frozen=True, slots=True)
class Delivery:
    """The delivery log of one event to one webhook. Times are Unix milliseconds."""

    webhook_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    created_ms: int
    attempts: int = 0
    next_attempt_ms: int | None = None  # while pending: when it is due (or its claim ends)
    history: tuple[Attempt, ...] = field(default_factory=tuple)

    def is_due(self, now_ms: int) -> bool:
        return self.status == "pending" and self.next_attempt_ms is not None and self.next_attempt_ms <= now_ms

    @property
    def first_attempt_ms(self) -> int | None:
        return self.history[0].at_ms if self.history else None

    @property
    def last(self) -> Attempt | None:
        return self.history[-1] if self.history else None

    def public(self) -> dict[str, Any]:
        last = self.last
        return {
            "object": "webhook_delivery", "webhook_id": self.webhook_id, "event_id": self.event_id,
            "event_type": self.event_type, "status": self.status, "attempts": self.attempts,
            "created_at": _rfc3339_ms(self.created_ms),
            "last_attempt_at": _rfc3339_ms(last.at_ms) if last else None,
            "last_status_code": last.status_code if last else None,
            "last_error": last.error if last else None,
            "next_attempt_at": _rfc3339_ms(self.next_attempt_ms) if self.status == "pending" else None,
            "history": [attempt.public() for attempt in self.history],
        }
