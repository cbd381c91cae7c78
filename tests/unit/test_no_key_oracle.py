"""No key-existence oracle, as a property of the code and not of a stopwatch: a forged key
with an id that never existed and a real id with a wrong secret take the same path through
``Authenticator.authenticate``: the same HMAC, and after the first request neither costs a
store read (the unknown id is in the negative cache). The end-to-end timing comparison is a
benchmark: ``make bench-security``."""

from __future__ import annotations

import pytest

import gateway.services.auth as auth
from gateway.domain.keys import hash_key, new_key
from gateway.errors import AuthenticationError
from gateway.models.records import KeyRecord, TenantRecord
from tests.e2e.test_security import forge

PEPPER = b"pepper"


class CountingAccounts:
    """The two reads ``Authenticator`` makes, counted per (method, id, consistent)."""

    def __init__(self, keys: dict[str, KeyRecord], tenants: dict[str, TenantRecord]) -> None:
        self.keys, self.tenants, self.reads = keys, tenants, []

    def get_key(self, key_id: str, consistent: bool = False) -> KeyRecord | None:
        self.reads.append(("key", key_id, consistent))
        return self.keys.get(key_id)

    def get_tenant(self, tenant_id: str, consistent: bool = False) -> TenantRecord | None:
        self.reads.append(("tenant", tenant_id, consistent))
        return self.tenants.get(tenant_id)


@pytest.fixture
def world(monkeypatch):  # type: ignore[no-untyped-def]
    real = new_key()
    record = KeyRecord(id=real.key_id, tenant_id="t1", scopes=["embeddings"], key_hash=hash_key(real.plaintext, PEPPER),
                       created_at="2026-01-01T00:00:00+00:00")
    tenant = TenantRecord(id="t1", name="one", plan="pro", created_at="2026-01-01T00:00:00+00:00")
    accounts = CountingAccounts({real.key_id: record}, {"t1": tenant})
    authenticator = auth.Authenticator(accounts, PEPPER, key_ttl_s=3600, tenant_ttl_s=3600)  # type: ignore[arg-type]
    hashed: list[str] = []
    verify = auth.verify_key

    def spy(plaintext: str, stored_hash: str, pepper: bytes) -> bool:
        hashed.append(stored_hash)
        return verify(plaintext, stored_hash, pepper)

    monkeypatch.setattr(auth, "verify_key", spy)
    return real, accounts, authenticator, hashed


def refused(authenticator: auth.Authenticator, credential: str) -> str:
    with pytest.raises(AuthenticationError) as exc:
        authenticator.authenticate(credential, None, fresh=False)
    return exc.value.message if hasattr(exc.value, "message") else str(exc.value)


def test_an_unknown_id_and_a_wrong_secret_take_the_same_path_and_the_same_reads(world):
    real, accounts, authenticator, hashed = world
    known = forge(real.key_id, "A" * 32)  # a real id, a wrong secret
    unknown = forge("key_" + "Q" * 16, "A" * 32)  # an id that never existed
    # GIVEN each has been tried once: the real record is cached, the unknown id is a
    # confirmed miss (an eventually consistent read, then a strongly consistent one)
    assert refused(authenticator, known) == refused(authenticator, unknown)
    assert accounts.reads == [("key", real.key_id, False), ("key", "key_" + "Q" * 16, False),
                              ("key", "key_" + "Q" * 16, True)]
    assert authenticator.keys.known_missing("key_" + "Q" * 16)
    assert not authenticator.keys.known_missing(real.key_id)
    accounts.reads.clear()
    hashed.clear()
    # WHEN both are tried again, interleaved, many times
    messages = {(name, refused(authenticator, credential))
                for _ in range(50) for name, credential in (("known", known), ("unknown", unknown))}
    # THEN no store read at all, one HMAC each, and the same answer
    assert accounts.reads == []
    assert len(hashed) == 100
    assert {m for _, m in messages} == {auth.INVALID_KEY}


def test_a_flood_of_forged_ids_costs_one_confirmed_miss_each_and_never_evicts_a_known_key(world, monkeypatch):
    real, accounts, authenticator, _ = world
    monkeypatch.setattr(authenticator.keys, "max_misses", 10)
    assert authenticator.authenticate(real.plaintext, None, fresh=False).key.id == real.key_id
    forged = [forge("key_" + f"{i:016d}".replace("0", "Z"), "B" * 32) for i in range(30)]
    accounts.reads.clear()
    for credential in forged:
        refused(authenticator, credential)
    assert len(accounts.reads) == 2 * len(forged)  # one read and one consistent read per new id
    accounts.reads.clear()
    assert authenticator.authenticate(real.plaintext, None, fresh=False).key.id == real.key_id
    assert accounts.reads == []  # the real key was never pushed out by the misses
