"""The pre-packed EVALSHA (gateway/adapters/redis_wire.py) against a real redis-server: the
same replies and errors as redis-py's Script, a lost script cache reloaded, a dead server
raised as redis-py raises it and a restarted one used again by the same client."""

from __future__ import annotations

import pytest
import redis

from gateway.adapters.redis_wire import WireScript, script_for

SOURCE = """
if ARGV[1] == 'fail' then return redis.error_reply('ERR asked to fail') end
redis.call('HSET', KEYS[1], 'seen', ARGV[1])
return {tonumber(ARGV[2]) + 1, ARGV[1], false, {KEYS[1], #ARGV}}
"""


@pytest.fixture
def client(redis_url: str):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def test_replies_as_redis_pys_script_does(client):
    wire, plain = script_for(client, SOURCE), client.register_script(SOURCE)
    assert isinstance(wire, WireScript)
    for args in (["a", 41], ["é ünïcode", -7], [b"\x00bytes", 2**40]):
        assert wire(["{t:x}:h"], args) == plain(["{t:x}:h"], args)
    assert client.hget("{t:x}:h", "seen") == b"\x00bytes"


def test_a_script_error_is_raised_and_the_connection_stays_usable(client):
    wire = script_for(client, SOURCE)
    with pytest.raises(redis.ResponseError, match="asked to fail"):
        wire(["{t:x}:h"], ["fail", 0])
    assert wire(["{t:x}:h"], ["ok", 1])[0] == 2
    assert len(client.connection_pool._available_connections) == 1  # released, not leaked


def test_a_flushed_script_cache_is_reloaded_and_the_call_sent_again(client):
    wire = script_for(client, SOURCE)
    wire(["{t:x}:h"], ["first", 1])
    client.script_flush()
    assert client.script_exists(wire.sha) == [False]
    assert wire(["{t:x}:h"], ["again", 1])[1] == b"again"
    assert client.script_exists(wire.sha) == [True]
    assert client.hget("{t:x}:h", "seen") == b"again"  # run once after the reload, not lost


def test_a_dead_server_raises_and_a_restarted_one_is_used_by_the_same_client(own_redis):
    client = redis.Redis(port=own_redis.port)
    wire = script_for(client, SOURCE)
    assert wire(["{t:x}:h"], ["up", 1])[0] == 2
    own_redis.kill()
    with pytest.raises(redis.ConnectionError):
        wire(["{t:x}:h"], ["down", 1])
    own_redis.start()
    assert wire(["{t:x}:h"], ["back", 1])[1] == b"back"  # an empty cache after the restart: reloaded


def test_other_clients_get_redis_pys_script(mocker):
    cluster = mocker.Mock(spec=["register_script"])  # e.g. a RedisCluster: it routes by slot itself
    assert script_for(cluster, SOURCE) is cluster.register_script.return_value
    cluster.register_script.assert_called_once_with(SOURCE)
