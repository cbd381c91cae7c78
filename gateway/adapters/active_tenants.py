"""Which tenants have usage or business events waiting in Redis: the flusher's work list.

Its members are work units: a tenant id (its usage stream and its events stream), or
``<tenant>#<part>`` for a further part of a hot tenant's usage stream (gateway.domain.usage.
stream_part), which another worker may drain at the same time.

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
from typing import Any

from redis.crc import key_slot

from gateway.adapters.lua_scripts import DEACTIVATE
from gateway.adapters.redis_keys import events_stream, tenant_key, usage_stream
from gateway.domain.usage import STREAM_PARTS

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


def work_unit(tenant_id: str, part: int = 0) -> str:
    """The index member for a tenant's stream part (part 0 also stands for its events stream)."""
    return tenant_id if not part else f"{tenant_id}#{part}"


def parse_unit(unit: str) -> tuple[str, int]:
    tenant_id, _, part = unit.partition("#")
    return tenant_id, int(part or 0)


def part_of(unit: str, parts: int) -> int:
    """Which of ``parts`` flush workers owns a work unit: by the tenant's hash slot plus the
    stream part, so that on a cluster a worker reads only the index keys of its own slots (all
    of them while there are no more workers than stream parts), and a hot tenant's parts go to
    different workers."""
    tenant_id, part = parse_unit(unit)
    return (tenant_slot(tenant_id) + part) % parts if parts > 1 else 0


class ActiveTenants:
    """The index of tenants with unflushed entries. ``cluster`` (default: from the client's
    type) chooses one key per hash slot or one key in all."""

    def __init__(self, client: Any, *, cluster: bool | None = None) -> None:
        self.client = client
        self.cluster = is_cluster(client) if cluster is None else cluster
        self._deactivate = client.register_script(DEACTIVATE.source)

    def key_for(self, tenant_id: str) -> str:
        """The index key the tenant's scripts add it to (in the tenant's own hash slot)."""
        return cluster_index_key(tenant_slot(tenant_id)) if self.cluster else SINGLE_NODE_INDEX

    def index_keys(self, part: int = 0, parts: int = 1) -> list[str]:
        if not self.cluster:
            return [SINGLE_NODE_INDEX]
        return [cluster_index_key(slot) for slot in _slots_of(part, parts)]

    def members(self, part: int = 0, parts: int = 1) -> list[str]:
        """The work units (those of worker ``part`` of ``parts``), in a stable order."""
        if self.cluster:
            found = self._read_by_node(_slots_of(part, parts))
        else:
            found = self.client.smembers(SINGLE_NODE_INDEX)
        units = {(m.decode() if isinstance(m, bytes) else str(m)) for m in found}
        if parts > 1:
            units = {u for u in units if part_of(u, parts) == part}
        return sorted(units, key=lambda u: (zlib.crc32(u.encode()), u))

    def _read_by_node(self, slots: list[int]) -> set[Any]:
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

    def deactivate(self, unit: str) -> bool:
        """Take a work unit out of the index if, and only if, its streams are empty."""
        tenant_id, part = parse_unit(unit)
        stream = usage_stream(tenant_id, part)
        other = events_stream(tenant_id) if not part else stream  # a further part has no events stream
        keys = DEACTIVATE.key_list({"index": self.key_for(tenant_id), "usage": stream, "events": other})
        return bool(self._deactivate(keys, DEACTIVATE.arg_list({"unit": unit})))

    def mark(self, tenant_ids: list[str]) -> list[str]:
        """List the work units of these tenants whose streams hold entries (the migration and
        the daily safety sweep: one pipelined XLEN per stream, never on the request path);
        returns the units listed."""
        units = [work_unit(t, part) for t in tenant_ids for part in range(STREAM_PARTS)]
        pipe = self.client.pipeline(transaction=False)
        for unit in units:
            tenant_id, part = parse_unit(unit)
            pipe.xlen(usage_stream(tenant_id, part))
            if not part:
                pipe.xlen(events_stream(tenant_id))
        lengths = iter(pipe.execute())
        waiting = [unit for unit in units if next(lengths) + (0 if parse_unit(unit)[1] else next(lengths))]
        if waiting:
            pipe = self.client.pipeline(transaction=False)
            for unit in waiting:
                pipe.sadd(self.key_for(parse_unit(unit)[0]), unit)
            pipe.execute()
        return waiting


def _slots_of(part: int, parts: int) -> list[int]:
    """The hash slots whose index keys may hold work units of worker ``part`` of ``parts``."""
    if parts <= STREAM_PARTS:
        return list(range(CLUSTER_SLOTS))
    residues = {(part - p) % parts for p in range(STREAM_PARTS)}
    return [slot for slot in range(CLUSTER_SLOTS) if slot % parts in residues]
