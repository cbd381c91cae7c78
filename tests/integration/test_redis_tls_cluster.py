"""The cluster-mode client against a real local Redis Cluster with TLS, as MemoryDB serves it:
the CA is always verified, the hostname check is an explicit setting (nodes are discovered by
IP address), and the template's MemoryDB ACL user can run everything the gateway runs and
nothing much else."""

from __future__ import annotations

import dataclasses
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import NoPermissionError, RedisClusterException

from gateway.adapters.redis_client import connect
from gateway.adapters.redis_store import STREAM_GROUP, RedisLimiter, events_stream, tenant_key, usage_stream
from gateway.config import Settings
from gateway.domain.admission import Grant, KeySettings, MoneySettings, Ticket, Verdict
from gateway.domain.plans import LimitOverrides, Limits
from gateway.domain.usage import UsageEvent
from gateway.services.metering import Flusher
from gateway.wiring import Container
from infra.local.template import load_template
from tests.integration.conftest import seed_empty
from tests.integration.tls_cluster import TlsCluster, start_tls_cluster

LIMITS = Limits(requests_per_minute=100, tokens_per_minute=10_000, monthly_tokens=100_000,
                max_concurrent_requests=10)
ACL_USER = "maas-test"
ACL_PASSWORD = uuid.uuid4().hex


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    tls_cluster = start_tls_cluster(tmp_path_factory.mktemp("tls-cluster"))
    yield tls_cluster
    tls_cluster.stop()


def cluster_client(cluster: TlsCluster, *, check_hostname: bool, ca: Path | None = None,
                   username: str | None = None, password: str | None = None) -> redis.RedisCluster:
    client = connect(cluster.seed_url, cluster=True, username=username, password=password, timeout_s=2,
                     tls_check_hostname=check_hostname, tls_ca_file=str(ca or cluster.pki.ca))
    assert isinstance(client, redis.RedisCluster)
    return client


def tenant_on_each_master(client: redis.RedisCluster) -> list[str]:
    """One tenant id per master, so a test touches every node (tenants spread by hash tag)."""
    wanted = {node.name for node in client.get_primaries()}
    found: dict[str, str] = {}
    for i in range(10_000):
        tenant = f"ten_{i}"
        node = client.get_node_from_key(tenant_key(tenant, "x"))
        found.setdefault(node.name, tenant)
        if set(found) == wanted:
            return list(found.values())
    raise AssertionError("no tenant hashed to some master")


def test_ca_verified_without_hostname_check_reaches_every_master(cluster):
    # GIVEN discovery that names the nodes by IP (what MemoryDB's CLUSTER SLOTS may answer)
    client = cluster_client(cluster, check_hostname=False)
    primaries = client.get_primaries()
    assert len(primaries) == 3 and {node.host for node in primaries} == {"127.0.0.1"}
    # WHEN every master is written and read over TLS THEN each answers
    for tenant in tenant_on_each_master(client):
        client.set(tenant_key(tenant, "probe"), tenant)
        assert client.get(tenant_key(tenant, "probe")) == tenant.encode()
    # AND the connections really are TLS with a verified chain and no hostname check
    connection = primaries[0].redis_connection.connection_pool.get_connection()
    try:
        assert connection.cert_reqs == ssl.CERT_REQUIRED and connection.check_hostname is False
    finally:
        primaries[0].redis_connection.connection_pool.release(connection)
    client.close()


def test_hostname_check_on_nodes_named_by_ip_is_refused(cluster):
    # The certificate names localhost, discovery hands out 127.0.0.1: with the check on, the
    # nodes it discovered cannot be reached. This is why the template turns the check off.
    with pytest.raises((redis.RedisError, RedisClusterException)) as error:
        client = cluster_client(cluster, check_hostname=True)
        for tenant in tenant_on_each_master(client):
            client.set(tenant_key(tenant, "probe"), "x")
    assert "certificate is not valid for '127.0.0.1'" in str(error.value)


def test_a_certificate_from_another_ca_is_refused(cluster):
    # The hostname check off does not turn verification off: the chain must still lead to the CA.
    with pytest.raises((redis.RedisError, RedisClusterException)) as error:
        client = cluster_client(cluster, check_hostname=False, ca=cluster.pki.other_ca)
        client.ping()
    assert "certificate verify failed" in str(error.value)


def test_settings_and_wiring_pass_the_hostname_mode(cluster, monkeypatch):
    # GIVEN the environment the template gives the functions (CA from the system trust store)
    monkeypatch.setenv("SSL_CERT_FILE", str(cluster.pki.ca))
    settings = Settings.from_env({"MAAS_REDIS_URL": cluster.seed_url, "MAAS_REDIS_CLUSTER": "true",
                                  "MAAS_REDIS_TLS_CHECK_HOSTNAME": "false"})
    assert settings.redis_tls_check_hostname is False
    assert Settings.from_env({}).redis_tls_check_hostname is True  # the safe default
    # WHEN the container builds its client THEN it reaches the cluster
    client = Container(settings).redis
    assert isinstance(client, redis.RedisCluster)
    assert client.ping() is True
    client.close()


# ------------------------------------------------------------------------ the MemoryDB ACL user


def template_access_string() -> str:
    return load_template()["Resources"]["RedisUser"]["Properties"]["AccessString"]


@pytest.fixture(scope="module")
def acl_client(cluster) -> Iterator[redis.RedisCluster]:
    """A client logged in as a user with exactly the template's MemoryDB access string."""
    rules = template_access_string().split()
    for admin in cluster.admins():
        admin.execute_command("ACL", "SETUSER", ACL_USER, "reset", *rules, f">{ACL_PASSWORD}")
    client = cluster_client(cluster, check_hostname=False, username=ACL_USER, password=ACL_PASSWORD)
    yield client
    client.close()


@pytest.fixture(scope="module")
def admin_client(cluster) -> Iterator[redis.RedisCluster]:
    """The default (unrestricted) user, for test set-up the gateway itself never does."""
    client = cluster_client(cluster, check_hostname=False)
    yield client
    client.close()


MONTH = time.strftime("%Y-%m", time.gmtime())


def ticket(tenant: str) -> Ticket:
    return Ticket(tenant_id=tenant, key_id="key_a", key_expires_ms=0, limits=LIMITS, tokens=7,
                  request_id=uuid.uuid4().hex, month=MONTH, pricing=((None, 1_000),))


def test_acl_user_admits_settles_and_writes_state(cluster, acl_client):
    # Every script, with the money paths on (prepaid credit, a budget with an alert, a key's own
    # limits), as a user with exactly the template's access string, on a tenant of each master.
    limiter = RedisLimiter(acl_client)
    in_an_hour_ms = int(time.time() * 1000) + 3_600_000
    for tenant in tenant_on_each_master(acl_client):
        seed_empty(limiter, tenant, month=MONTH)
        limiter.set_money(tenant, MoneySettings(prepaid=True, budget_nano=10**12, hard=True, budget_text="1000",
                                                thresholds=((1, "0.000000001"),), low_balance_nano=10**15))
        limiter.add_grant(tenant, Grant("cr_a", 0, 10**12))
        limiter.set_key_settings(tenant, "key_a", KeySettings(LimitOverrides(requests_per_minute=100)))
        limiter.set_tenant_status(tenant, "active")
        limiter.set_key_expiry(tenant, "key_a", in_an_hour_ms)  # a rotated key in its grace period
        admitted = ticket(tenant)
        decision = limiter.admit(admitted)
        assert decision.verdict is Verdict.OK and decision.debits == "cr_a:7000"
        event = UsageEvent(request_id=admitted.request_id, tenant_id=tenant, key_id="key_a", model="m",
                           prompt_tokens=7, timestamp_ms=int(time.time() * 1000), cost_nano=decision.cost_nano,
                           debits=decision.debits)
        limiter.settle(admitted, decision, charge=True, event=event)
        assert acl_client.xlen(usage_stream(tenant)) >= 1
        assert acl_client.xlen(events_stream(tenant)) == 2  # the budget's alert, and low credit
        refunded = ticket(tenant)
        limiter.settle(refunded, limiter.admit(refunded), charge=False)
        assert limiter.money_state(tenant, MONTH).credits_remaining(0) == 10**12 - 7_000
        limiter.revoke_key(tenant, "key_a")
        assert limiter.admit(ticket(tenant)).verdict is Verdict.KEY_REVOKED
    # A failover or restart empties the script cache: the scripts are loaded again (SCRIPT LOAD).
    for admin in cluster.admins():
        admin.script_flush()
    tenant = tenant_on_each_master(acl_client)[0]
    limiter.set_key_expiry(tenant, "key_b", in_an_hour_ms)
    assert limiter.admit(dataclasses.replace(ticket(tenant), key_id="key_b")).verdict is Verdict.OK
    assert acl_client.ping() is True  # /health


def test_acl_user_runs_the_flusher(cluster, acl_client, admin_client, container):
    # GIVEN usage events in streams on every master, and a stale consumer in one group
    tenants = tenant_on_each_master(acl_client)
    now_ms = int(time.time() * 1000)
    for tenant in tenants:
        admin_client.delete(usage_stream(tenant), tenant_key(tenant, "cfg"))
        seed_empty(RedisLimiter(acl_client), tenant, month=MONTH)  # as creating the tenant does
        for _ in range(3):
            event = UsageEvent(request_id=uuid.uuid4().hex, tenant_id=tenant, key_id="key_a",
                               model="all-MiniLM-L6-v2", prompt_tokens=4, timestamp_ms=now_ms)
            admin_client.xadd(usage_stream(tenant), event.to_fields())
    admin_client.xgroup_create(usage_stream(tenants[0]), STREAM_GROUP, id="0")
    admin_client.xgroup_createconsumer(usage_stream(tenants[0]), STREAM_GROUP, "ghost")
    admin_client.xadd(usage_stream(tenants[1]), {"not": "an event"})  # goes to the dead-letter stream
    flusher = Flusher(redis_client=acl_client, usage=container.usage, accounts=container.accounts)
    flusher.pruner.min_idle_ms = 0
    # WHEN the flusher runs as the ACL user
    result = flusher.flush(tenants)
    # THEN everything is written, acknowledged, measured and pruned without a permission error
    assert result.errors == [] and result.written == 3 * len(tenants) and result.dead_lettered == 1
    assert result.lag_known and result.unflushed == 0
    names = [c["name"] for c in acl_client.xinfo_consumers(usage_stream(tenants[0]), STREAM_GROUP)]
    assert "ghost" not in [n.decode() if isinstance(n, bytes) else n for n in names]


@pytest.mark.parametrize("command", [("FLUSHALL",), ("CONFIG", "GET", "maxmemory"), ("KEYS", "*"), ("DEL", "x"),
                                     ("SCRIPT", "FLUSH"), ("XGROUP", "DESTROY", "s", "g"), ("PUBLISH", "c", "m")])
def test_acl_user_cannot_run_what_the_gateway_never_runs(cluster, acl_client, command):
    node = acl_client.get_primaries()[0]
    with pytest.raises(NoPermissionError):
        acl_client.execute_command(*command, target_nodes=node)


def test_the_active_index_lives_in_each_tenants_slot_and_the_flusher_finds_it(cluster, acl_client, container):
    from redis.crc import key_slot

    from gateway.adapters.active_tenants import CLUSTER_SLOTS, ActiveTenants

    # GIVEN a charged request on a tenant of each master, as the ACL user (the settle script
    # adds the tenant to an index key of its own slot: no CROSSSLOT, no extra command)
    index = ActiveTenants(acl_client)
    assert index.cluster and len(index.index_keys()) == CLUSTER_SLOTS
    limiter = RedisLimiter(acl_client)
    tenants = [f"{t}_idx" for t in tenant_on_each_master(acl_client)]
    for tenant in tenants:
        seed_empty(limiter, tenant, month=MONTH)
        admitted = ticket(tenant)
        decision = limiter.admit(admitted)
        limiter.settle(admitted, decision, charge=True, event=UsageEvent(
            request_id=admitted.request_id, tenant_id=tenant, key_id="key_a", model="all-MiniLM-L6-v2",
            prompt_tokens=7, timestamp_ms=int(time.time() * 1000), cost_nano=decision.cost_nano))
        assert key_slot(index.key_for(tenant).encode()) == key_slot(usage_stream(tenant).encode())
    # WHEN the flusher (as the ACL user) reads the index of every slot and drains it
    assert set(tenants) <= set(index.members())
    assert set().union(*(index.members(part, 3) for part in range(3))) == set(index.members())
    result = Flusher(redis_client=acl_client, usage=container.usage, accounts=container.accounts).flush()
    # THEN each tenant's usage is in the ledger and the tenants left the index
    assert result.errors == [] and result.written >= len(tenants)
    assert not set(tenants) & set(index.members())
