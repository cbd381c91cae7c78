"""What the local stack keeps across restarts, against real parts: the durable Redis with its
ACL user (redis-server, kill -9), the admin key reused while it is valid (the local DynamoDB),
and the state dir with its --reset and its one-stack lock."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from infra.local.services import free_port, redis_service
from infra.local.stack import StackConfig, StateDir, StateLock, ensure_admin_key, local_secret, reset

PASSWORD = "local-test-password"


def refused_client(port: int, **credentials: str) -> redis.Redis:
    # A refused AUTH is a ConnectionError to redis-py, which it retries with backoff: once is enough.
    return redis.Redis(port=port, retry=Retry(NoBackoff(), 0), **credentials)


# ------------------------------------------------------------------------------ durable Redis


@pytest.fixture
def durable_redis(tmp_path: Path):  # type: ignore[no-untyped-def]
    service = redis_service(free_port(), tmp_path / "redis", tmp_path, durable=True, user=("maas", PASSWORD)).start()
    yield service
    service.stop()


def test_acknowledged_writes_survive_kill_9(durable_redis):
    client = redis.Redis(port=durable_redis.port, username="maas", password=PASSWORD)
    # GIVEN writes of every shape the gateway makes: plain, MULTI/EXEC, a Lua script, a stream entry
    client.set("plain", "1")
    with client.pipeline(transaction=True) as pipe:
        pipe.incrby("counter", 5).xadd("{t:x}:usage", {"tokens": "12"}).execute()
    client.eval("redis.call('HSET', KEYS[1], 'tokens', ARGV[1]); return 1", 1, "bucket", "42")
    # WHEN the server is killed -9 right after they were acknowledged, and started again
    os.kill(durable_redis.pid, signal.SIGKILL)
    durable_redis.process.wait()
    durable_redis.restart()
    # THEN every acknowledged write is there
    assert client.get("plain") == b"1" and client.get("counter") == b"5"
    assert client.xlen("{t:x}:usage") == 1 and client.hget("bucket", "tokens") == b"42"
    log = (durable_redis.log_path).read_text()
    assert "NOPERM" not in log and "CRITICAL" not in log  # nothing refused while replaying the file


def test_only_the_configured_user_gets_in(durable_redis):
    with pytest.raises(redis.exceptions.AuthenticationError):
        refused_client(durable_redis.port).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        refused_client(durable_redis.port, username="maas", password="wrong").ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        refused_client(durable_redis.port, username="default", password="").ping()
    assert redis.Redis(port=durable_redis.port, username="maas", password=PASSWORD).ping()


def test_the_config_file_is_private_and_holds_no_password(durable_redis):
    config = durable_redis.log_path.parent / "redis" / "redis.conf"
    assert oct(config.stat().st_mode)[-3:] == "600"
    text = config.read_text()
    assert PASSWORD not in text and hashlib.sha256(PASSWORD.encode()).hexdigest() in text
    assert "appendfsync always" in text


# ------------------------------------------------------------------------------ the admin key


def test_the_admin_key_is_reused_while_valid_and_plans_kept_current(container, tmp_path):
    from gateway.domain.plans import load_catalog

    key_file = tmp_path / "admin_key"
    first, issued = ensure_admin_key(container, key_file)
    assert issued and key_file.read_text().strip() == first
    assert oct(key_file.stat().st_mode)[-3:] == "600"
    # GIVEN a plan changed in the table behind the catalog's back
    catalog = load_catalog()
    plan = catalog.plans[0]
    container.accounts.put_plan(plan.model_copy(update={"description": "stale"}), catalog.version)
    # WHEN the stack starts again
    again, issued = ensure_admin_key(container, key_file)
    # THEN the same key, and the plan as the catalog says
    assert (again, issued) == (first, False)
    assert container.accounts.get_plan(plan.name).description == plan.description


def test_a_revoked_or_unknown_admin_key_is_replaced(container, tmp_path):
    from gateway.domain.keys import parse_key
    from gateway.models.records import rfc3339, utcnow

    key_file = tmp_path / "admin_key"
    first, _ = ensure_admin_key(container, key_file)
    record = container.accounts.get_key(parse_key(first).key_id, consistent=True)
    container.accounts.put_key(record.model_copy(update={"revoked_at": rfc3339(utcnow())}), expected=record)
    second, issued = ensure_admin_key(container, key_file)
    assert issued and second != first and key_file.read_text().strip() == second
    key_file.write_text("maas_not_a_key_of_this_table\n")  # e.g. DynamoDB came back empty
    third, issued = ensure_admin_key(container, key_file)
    assert issued and third not in (first, second)


# ------------------------------------------------------------------------------ the state dir


def make_state(root: Path) -> StateDir:
    state = StateDir(root)
    for directory in (state.redis, state.dynamodb, state.logs, root / "model"):
        directory.mkdir(parents=True)
        (directory / "file").write_text("x")
    for file in (state.pepper, state.admin_key, state.redis_password, state.status_file):
        file.write_text("x")
    return state


def test_reset_deletes_the_state_says_what_and_keeps_the_model(tmp_path, capsys):
    state = make_state(tmp_path / "maas")
    reset(StackConfig(state_dir=state.root))
    out = capsys.readouterr().out
    for name in ("redis/", "dynamodb/", "logs/", "pepper", "admin_key", "redis_password", "stack-status.json"):
        assert name in out, name
        assert not (state.root / name.rstrip("/")).exists(), name
    assert "model is kept" in out and (state.root / "model" / "file").exists()
    reset(StackConfig(state_dir=state.root))
    assert "no local state" in capsys.readouterr().out


def test_reset_refuses_under_a_running_stack(tmp_path):
    state = make_state(tmp_path / "maas")
    running = StateLock(state.lock_file).acquire()  # as LocalStack.start holds it
    try:
        with pytest.raises(RuntimeError, match="another local stack"):
            reset(StackConfig(state_dir=state.root))
        assert state.pepper.exists() and state.redis.exists()
    finally:
        running.release()


def test_local_secrets_are_made_once_and_private(tmp_path):
    path = tmp_path / "secret"
    made = local_secret(path, lambda: "s3cret")
    assert made == "s3cret" and local_secret(path, lambda: "other") == "s3cret"
    path.chmod(0o644)
    local_secret(path, lambda: "other")
    assert oct(path.stat().st_mode)[-3:] == "600"


def test_stack_config_reads_the_environment_when_made(monkeypatch, tmp_path):
    monkeypatch.setenv("MAAS_API_PORT", "3999")
    monkeypatch.setenv("MAAS_STATE_DIR", str(tmp_path))
    config = StackConfig()
    assert (config.api_port, config.state_dir) == (3999, tmp_path)
    assert config.redis_durable
