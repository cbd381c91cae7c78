"""Webhook rules without a network: signatures, the retry schedule, which URLs and addresses
are refused (SSRF; names resolved by a stub resolver, literal addresses by the real check),
and the sealing of signing secrets."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from gateway.adapters.secret_box import SealedSecretError, SecretBox
from gateway.adapters.webhook_sender import WebhookSender, system_resolver
from gateway.domain.webhooks import (
    GIVE_UP_AFTER_S,
    MAX_RETRY_S,
    UnsafeWebhookUrl,
    address_refusal,
    next_attempt_at,
    parse_target,
    retry_delay,
    signature,
    verify_signature,
)

# -- signatures ------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"id":"evt_1","type":"credits.low"}'
    header = signature("whsec_abc", body, 1_800_000_000)
    expected = hmac.new(b"whsec_abc", b"1800000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1800000000,v1={expected}"


def test_a_receiver_verifies_a_signature_and_rejects_tampering():
    body = b'{"id":"evt_1"}'
    header = signature("whsec_abc", body, 1_800_000_000)
    assert verify_signature("whsec_abc", body, header, now=1_800_000_010)
    assert not verify_signature("whsec_abc", body + b" ", header, now=1_800_000_010)  # body changed
    assert not verify_signature("whsec_xyz", body, header, now=1_800_000_010)  # another secret
    assert not verify_signature("whsec_abc", body, header, now=1_800_001_000)  # replayed much later
    assert not verify_signature("whsec_abc", body, header.replace("t=1800000000", "t=1800000001"),
                                now=1_800_000_010)  # the timestamp is signed too
    assert not verify_signature("whsec_abc", body, "garbage", now=1_800_000_010)


# -- retries ---------------------------------------------------------------------------------


def test_retries_back_off_exponentially_with_jitter_up_to_an_hour():
    assert [retry_delay(n, jitter=0.0) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert retry_delay(40, jitter=0.0) == MAX_RETRY_S
    rng = random.Random(7)
    delays = [retry_delay(5, jitter=rng.random()) for _ in range(200)]
    assert all(8 <= d <= 16 for d in delays) and len(set(delays)) > 100  # spread, at most halved


def test_a_delivery_is_given_up_a_day_after_its_first_attempt():
    first = 1_000_000.0
    assert next_attempt_at(first_attempt_at=first, now=first, attempts=1, jitter=0.0) == first + 1
    late = first + GIVE_UP_AFTER_S - 10
    assert next_attempt_at(first_attempt_at=first, now=late, attempts=30, jitter=0.0) is None
    # the whole schedule: a few dozen attempts, the last within the day
    now, attempts = first, 0
    while (at := next_attempt_at(first_attempt_at=first, now=now, attempts=attempts + 1, jitter=0.0)) is not None:
        now, attempts = at, attempts + 1
    assert 25 <= attempts <= 40 and now - first <= GIVE_UP_AFTER_S


# -- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, reason", [
    ("http://example.com/hook", "https"),
    ("ftp://example.com/hook", "https"),
    ("https:///nohost", "host"),
    ("https://user:pw@example.com/", "credentials"),
    ("https://exa mple.com/", "spaces"),
    ("https://example.com:0/", "port 0"),
    ("https://example.com:99999/", "valid URL"),
    ("https://bücher.example/", "non-ASCII"),
    ("//example.com/hook", "https"),
    ("https://example.com/" + "a" * 3000, "2048"),
])
def test_urls_refused_everywhere(url, reason):
    for local in (False, True):
        with pytest.raises(UnsafeWebhookUrl, match=reason):
            parse_target(url, allow_local_http=local)


def test_plain_http_only_to_loopback_and_only_on_the_local_stack():
    for url in ("http://127.0.0.1:8123/hooks", "http://localhost/x", "http://[::1]:9/x"):
        with pytest.raises(UnsafeWebhookUrl, match="https"):
            parse_target(url, allow_local_http=False)
        assert parse_target(url, allow_local_http=True).scheme == "http"
    with pytest.raises(UnsafeWebhookUrl, match="127.0.0.1"):
        parse_target("http://10.0.0.8/x", allow_local_http=True)


def test_target_keeps_path_query_and_host_header():
    target = parse_target("https://Hooks.Example.com:8443/in/maas?x=1&y=2", allow_local_http=False)
    assert (target.host, target.port, target.path, target.host_header) == (
        "hooks.example.com", 8443, "/in/maas?x=1&y=2", "hooks.example.com:8443")
    assert parse_target("https://example.com", allow_local_http=False).path == "/"
    assert parse_target("https://[2606:4700::1]/h", allow_local_http=False).host_header == "[2606:4700::1]"


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "100.100.100.200",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fd00:ec2::254",
    "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "2002:a9fe:a9fe::1",
    "64:ff9b::a9fe:a9fe", "192.0.2.10", "198.18.0.1",
])
def test_non_public_addresses_are_refused(address):
    assert address_refusal(address) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::6810:85e5", "::ffff:8.8.8.8",
                                     "64:ff9b::808:808"])
def test_public_addresses_are_accepted(address):
    assert address_refusal(address) is None


# -- the sender's check: names through a stub resolver, literals through the real one ----------


def stub(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise UnsafeWebhookUrl(f"host {host!r} does not resolve")
        return table[host]
    return resolve


def test_a_name_resolving_to_a_private_or_metadata_address_is_refused():
    sender = WebhookSender(allow_local_http=False, timeout_s=1, resolver=stub({
        "public.example": ["93.184.215.14"],
        "internal.example": ["10.0.0.5"],
        "metadata.example": ["169.254.169.254"],
        "mixed.example": ["93.184.215.14", "192.168.0.1"],  # one bad address is enough
    }))
    assert sender.check("https://public.example/hooks").address == "93.184.215.14"
    for host in ("internal.example", "metadata.example", "mixed.example"):
        with pytest.raises(UnsafeWebhookUrl, match="non-public"):
            sender.check(f"https://{host}/hooks")
    with pytest.raises(UnsafeWebhookUrl, match="does not resolve"):
        sender.check("https://nowhere.example/hooks")


def test_literal_private_and_metadata_addresses_are_refused_by_the_real_check():
    sender = WebhookSender(allow_local_http=False, timeout_s=1, resolver=system_resolver)
    for url in ("https://169.254.169.254/latest/meta-data/", "https://127.0.0.1:8443/", "https://10.0.0.1/",
                "https://[::1]/", "https://[fd00:ec2::254]/", "https://0.0.0.0/", "https://[::ffff:10.0.0.1]/"):
        with pytest.raises(UnsafeWebhookUrl):
            sender.check(url)
    assert sender.check("https://93.184.215.14/hooks").address == "93.184.215.14"


def test_a_refused_url_is_a_failed_attempt_without_any_request():
    sender = WebhookSender(allow_local_http=False, timeout_s=1, resolver=stub({"rebound.example": ["127.0.0.1"]}))
    outcome = sender.post("https://rebound.example/hooks", b"{}", {})
    assert outcome.status_code is None and not outcome.delivered
    assert outcome.error is not None and outcome.error.startswith("refused") and "loopback" in outcome.error


def test_the_local_stack_delivers_to_loopback_and_still_refuses_private_and_metadata_addresses():
    sender = WebhookSender(allow_local_http=True, timeout_s=1, resolver=system_resolver)
    assert sender.check("http://127.0.0.1:9/hooks").address == "127.0.0.1"
    assert sender.check("https://[::1]:8443/hooks").address == "::1"
    for url in ("https://169.254.169.254/latest/meta-data/", "https://10.0.0.1/", "https://[fd00:ec2::254]/",
                "https://0.0.0.0/"):
        with pytest.raises(UnsafeWebhookUrl, match="non-public"):
            sender.check(url)
    assert address_refusal("127.0.0.2", allow_loopback=True) is None
    assert address_refusal("::ffff:127.0.0.1", allow_loopback=True) is None
    assert address_refusal("169.254.169.254", allow_loopback=True) is not None


# -- secrets at rest -------------------------------------------------------------------------


def test_sealed_secrets_open_only_with_the_same_pepper_and_context():
    box = SecretBox.for_webhook_secrets(b"pepper-1")
    sealed = box.seal("whsec_0123", context="wh_a")
    assert sealed.startswith("v1.") and "whsec_0123" not in sealed
    assert box.seal("whsec_0123", context="wh_a") != sealed  # a fresh nonce each time
    assert box.open(sealed, context="wh_a") == "whsec_0123"
    with pytest.raises(SealedSecretError):
        box.open(sealed, context="wh_b")  # copied onto another webhook
    with pytest.raises(SealedSecretError):
        SecretBox.for_webhook_secrets(b"pepper-2").open(sealed, context="wh_a")
    with pytest.raises(SealedSecretError):
        box.open(sealed[:-4] + "AAAA", context="wh_a")
