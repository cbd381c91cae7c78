"""Which tenants have usage or business events waiting in Redis: the flusher's work list.

A tenant enters its index set in the same script, in the same round trip, that appends to its
streams (``settle.lua`` with every usage event, ``admit.lua`` when it emits an event), so being
listed costs the request path no command and is atomic with the append. The flusher takes a
tenant out (``deactivate.lua``) only when both its streams are empty, in one script as well,
so an append can never be lost between the check and the removal. A flush run therefore reads
the index and touches active tenants only: an idle tenant costs nothing per run.

Redis Cluster (MemoryDB) lets a script touch only the keys of one hash slot, and the index must
be written by the tenant's own scripts: so there is one index key per hash slot (16,384), each
named by a hash tag chosen to hash to that slot (``slot_tag``), and a run reads them all, one
pipelined SMEMBERS each, whatever the number of tenants (a fixed cost, spread over the shards).
On a single Redis node, where every key may be touched, one key holds them all.
"""

from __future__ import annotations

import binascii
import zlib
from importlib import resources
from typing import Any

from redis.crc import key_slot

from gateway.adapters.redis_store import events_stream, tenant_key, usage_stream

CLUSTER_SLOTS = 16384
SINGLE_NODE_INDEX = "{active}:tenants"

# A key's slot is CRC16-XMODEM of its tag, low 14 bits, and that CRC is linear over GF(2): with
# the tag "a:" + four characters 0x40|nibble, each of the 16 nibble bits flips a fixed set of
# CRC bits, so the nibbles that give a slot are solved for (Gaussian elimination over 14 bits)
# instead of searched for: any slot's tag in a few microseconds, on the request path too.
_TAG_BASE = b"a:@@@@"
_FREE = [(2 + i // 4, 1 << (i % 4)) for i in range(16)]  # (byte, bit) of each free bit


def _crc(data: bytes) -> int:
    return binascii.crc_hqx(data, 0) & (CLUSTER_SLOTS - 1)


def _basis() -> dict[int, tuple[int, int]]:
    """Pivot bit -> (slot bits, the free bits that flip them): a reduced basis of the columns."""
    base, basis = _crc(_TAG_BASE), {}
    for i, (byte, bit) in enumerate(_FREE):
        flipped = bytearray(_TAG_BASE)
        flipped[byte] ^= bit
        vector, combo = _crc(bytes(flipped)) ^ base, 1 << i
        while vector:
            pivot = vector.bit_length() - 1
            if pivot not in basis:
                basis[pivot] = (vector, combo)
                break
            vector ^= basis[pivot][0]
            combo ^= basis[pivot][1]
    assert len(basis) == 14, "the free bits must reach every slot"
    return basis


_BASIS = _basis()


def slot_tag(slot: int) -> str:
    """A hash tag whose keys live in ``slot`` (tests/unit/test_active_index.py checks all 16,384)."""
    target, combo = (slot ^ _crc(_TAG_BASE)) & (CLUSTER_SLOTS - 1), 0
    while target:
        vector, flips = _BASIS[target.bit_length() - 1]
        target ^= vector
        combo ^= flips
    tag = bytearray(_TAG_BASE)
    for i, (byte, bit) in enumerate(_FREE):
        if combo >> i & 1:
            tag[byte] ^= bit
    return tag.decode()


def tenant_slot(tenant_id: str) -> int:
    """The hash slot every key of the tenant lives in (its tag ``{t:<id>}``)."""
    return key_slot(tenant_key(tenant_id, "usage").encode())


def cluster_index_key(slot: int) -> str:
    return f"{{{slot_tag(slot)}}}:active"


def is_cluster(client: Any) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def part_of(tenant_id: str, parts: int) -> int:
    """Which of ``parts`` flush workers owns the tenant: by hash slot, so that on a cluster
    each worker reads only the index keys of its own slots."""
    return tenant_slot(tenant_id) % parts if parts > 1 else 0


class ActiveTenants:
    """The index of tenants with unflushed entries. ``cluster`` (default: from the client's
    type) chooses one key per hash slot or one key in all."""

    def __init__(self, client: Any, *, cluster: bool | None = None) -> None:
        self.client = client
        self.cluster = is_cluster(client) if cluster is None else cluster
        self._deactivate = client.register_script(
            resources.files("gateway.lua").joinpath("deactivate.lua").read_text())

    def key_for(self, tenant_id: str) -> str:
        """The index key the tenant's scripts add it to (in the tenant's own hash slot)."""
        return cluster_index_key(tenant_slot(tenant_id)) if self.cluster else SINGLE_NODE_INDEX

    def index_keys(self, part: int = 0, parts: int = 1) -> list[str]:
        if not self.cluster:
            return [SINGLE_NODE_INDEX]
        return [cluster_index_key(slot) for slot in range(part, CLUSTER_SLOTS, parts)]

    def members(self, part: int = 0, parts: int = 1) -> list[str]:
        """The active tenants (those of worker ``part`` of ``parts``), in a stable order."""
        if self.cluster:
            found = self._read_by_node(range(part, CLUSTER_SLOTS, parts))
        else:
            found = self.client.smembers(SINGLE_NODE_INDEX)
        tenants = {(m.decode() if isinstance(m, bytes) else str(m)) for m in found}
        if parts > 1:
            tenants = {t for t in tenants if part_of(t, parts) == part}
        return sorted(tenants, key=lambda t: (zlib.crc32(t.encode()), t))

    def _read_by_node(self, slots: range) -> set[Any]:
        """SMEMBERS of the slots' index keys: one plain pipeline per master, which knows its
        slots (a cluster pipeline works out each command's node again, at several times the
        cost); a key whose slot moved meanwhile is read again through the cluster client."""
        by_node: dict[str, tuple[Any, list[str]]] = {}
        for slot in slots:
            node = self.client.nodes_manager.get_node_from_slot(slot)
            by_node.setdefault(node.name, (node, []))[1].append(cluster_index_key(slot))
        found: set[Any] = set()
        for node, keys in by_node.values():
            pipe = node.redis_connection.pipeline(transaction=False)
            for key in keys:
                pipe.smembers(key)
            for key, reply in zip(keys, pipe.execute(raise_on_error=False), strict=True):
                found |= self.client.smembers(key) if isinstance(reply, Exception) else reply
        return found

    def deactivate(self, tenant_id: str) -> bool:
        """Take the tenant out of the index if, and only if, both its streams are empty."""
        keys = [self.key_for(tenant_id), usage_stream(tenant_id), events_stream(tenant_id)]
        return bool(self._deactivate(keys, [tenant_id]))

    def mark(self, tenant_ids: list[str]) -> list[str]:
        """Add the tenants whose streams hold entries (the migration and the daily safety
        sweep: one pipelined XLEN pair per tenant); returns those added."""
        pipe = self.client.pipeline(transaction=False)
        for tenant_id in tenant_ids:
            pipe.xlen(usage_stream(tenant_id))
            pipe.xlen(events_stream(tenant_id))
        lengths = pipe.execute()
        waiting = [t for i, t in enumerate(tenant_ids) if lengths[2 * i] or lengths[2 * i + 1]]
        if waiting:
            pipe = self.client.pipeline(transaction=False)
            for tenant_id in waiting:
                pipe.sadd(self.key_for(tenant_id), tenant_id)
            pipe.execute()
        return waiting
