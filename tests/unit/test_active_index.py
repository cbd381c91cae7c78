"""The active-tenants index keys: one per Redis Cluster hash slot, each named by a tag that
hashes to its slot, so a tenant's scripts may write the key of the tenant's own slot."""

import pytest
from redis.crc import key_slot

from gateway.adapters.active_tenants import (
    CLUSTER_SLOTS,
    SINGLE_NODE_INDEX,
    ActiveTenants,
    cluster_index_key,
    part_of,
    slot_tag,
    tenant_slot,
)
from gateway.adapters.redis_store import tenant_key


class _NoRedis:
    """Only what ActiveTenants needs to be built (no command is sent in these tests)."""

    def register_script(self, script: str) -> object:
        return object()


@pytest.fixture
def redis_free_client() -> _NoRedis:
    return _NoRedis()


def test_every_slot_has_an_index_key_in_that_slot():
    tags = [slot_tag(slot) for slot in range(CLUSTER_SLOTS)]
    assert [key_slot(cluster_index_key(slot).encode()) for slot in range(CLUSTER_SLOTS)] == list(range(CLUSTER_SLOTS))
    assert len(set(tags)) == CLUSTER_SLOTS and all(tag.isprintable() and "{" not in tag for tag in tags)


def test_a_tenants_index_key_shares_its_slot(redis_free_client):
    for i in range(500):
        tenant = f"ten_{i:04d}"
        key = ActiveTenants(redis_free_client, cluster=True).key_for(tenant)
        assert key_slot(key.encode()) == key_slot(tenant_key(tenant, "usage").encode()) == tenant_slot(tenant)
    assert ActiveTenants(redis_free_client, cluster=False).key_for("ten_x") == SINGLE_NODE_INDEX


def test_workers_split_the_slots_between_them():
    tenants = [f"ten_{i}" for i in range(2000)]
    shares = [[t for t in tenants if part_of(t, 4) == part] for part in range(4)]
    assert sum(map(len, shares)) == 2000 and min(map(len, shares)) > 400
    assert {part_of(t, 1) for t in tenants} == {0}
