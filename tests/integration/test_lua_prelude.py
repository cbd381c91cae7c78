"""prelude.lua, once, in a real redis-server: how the scripts write integers and money.

Every script that needs them gets these helpers from the one prelude (gateway/adapters/
lua_scripts.py), so their behaviour is pinned here: negatives keep their sign, zero is never
'-0' (Redis refuses it for an integer), integers are exact up to 2^53, and fractions round.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from gateway.adapters.lua_scripts import PRELUDE, _text

# Each ARGV as a number, through int() and money(); and emit() onto KEYS[1].
PROBE = _text(PRELUDE) + """
local out = {}
for i, v in ipairs(ARGV) do out[i] = {int(tonumber(v)), money(tonumber(v))} end
return out
"""
EMIT = _text(PRELUDE) + """
emit(KEYS[1], 'ten_a', 1700000000999, 'credits.low', 'ten_a|credits.low|g1', {credits_remaining = money(-5)})
return clock(ARGV[1])
"""


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def written(client: redis.Redis, *values: str) -> dict[str, tuple[str, str]]:
    reply = client.eval(PROBE, 0, *values)
    return {v: (i.decode(), m.decode()) for v, (i, m) in zip(values, reply, strict=True)}


def test_zero_is_never_negative_zero(client: redis.Redis) -> None:
    assert written(client, "0", "-0", "-0.4") == {"0": ("0", "0"), "-0": ("0", "0"), "-0.4": ("0", "0")}


def test_negatives_keep_their_sign(client: redis.Redis) -> None:
    assert written(client, "-1", "-1500000000", "-1000000000") == {
        "-1": ("-1", "-0.000000001"), "-1500000000": ("-1500000000", "-1.5"),
        "-1000000000": ("-1000000000", "-1")}


def test_integers_are_exact_up_to_two_to_the_53(client: redis.Redis) -> None:
    top, below = str(2**53), str(2**53 - 1)
    assert written(client, below, "-" + below, top, "1e15") == {
        below: (below, "9007199.254740991"), "-" + below: ("-" + below, "-9007199.254740991"),
        top: (top, "9007199.254740992"), "1e15": ("1000000000000000", "1000000")}


def test_money_writes_nano_as_a_plain_decimal(client: redis.Redis) -> None:
    assert written(client, "1", "1500000000", "20000000", "123456789012") == {
        "1": ("1", "0.000000001"), "1500000000": ("1500000000", "1.5"), "20000000": ("20000000", "0.02"),
        "123456789012": ("123456789012", "123.456789012")}


def test_fractions_round_to_the_nearest(client: redis.Redis) -> None:
    # int: half to even (C's %.0f); money: to the nearest nano, half away from zero.
    assert written(client, "2.5", "3.5", "-2.5", "999999999.6") == {
        "2.5": ("2", "0.000000003"), "3.5": ("4", "0.000000004"), "-2.5": ("-2", "-0.000000003"),
        "999999999.6": ("1000000000", "1")}


def test_emit_derives_the_id_from_the_cause_and_the_clock_takes_a_given_time(client: redis.Redis) -> None:
    stream = "{t:prelude}:events"
    client.delete(stream)
    assert client.eval(EMIT, 1, stream, "1234") == 1234
    now = client.eval(EMIT, 1, stream)  # none given: the server's clock, in ms
    server_s = int(client.time()[0])
    assert abs(now // 1000 - server_s) <= 1
    (_, first), (_, second) = client.xrange(stream)
    assert first[b"id"] == second[b"id"] and first[b"id"].startswith(b"evt_") and len(first[b"id"]) == 28
    assert first[b"created"] == b"1700000000" and first[b"data"] == b'{"credits_remaining":"-0.000000005"}'
    client.delete(stream)
