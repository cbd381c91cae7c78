"""EVALSHA on the hot path without redis-py's generic command layers.

redis-py's ``Script`` goes through ``execute_command``: each argument encoded in Python, the
reply through the generic parser and its callbacks. Per request the gateway runs two scripts
whose replies are flat arrays it reads itself, so ``WireScript`` packs the command in one C
call (hiredis's ``pack_command``; redis-py's packer where hiredis is absent), writes it on a
pooled connection and reads the raw reply. What stays redis-py's: the pool, the connection
(TLS, AUTH, health checks) and the client's retry policy, so a connection error is retried or
raised exactly as through ``execute_command``; NOSCRIPT loads the script and sends it again.

Only for a plain ``redis.Redis``: a ``RedisCluster`` routes each command by slot itself, so
``script_for`` gives it (and any other client) redis-py's ``Script``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # redis[hiredis] in the layer's requirements; the pure-Python packer otherwise
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is installed wherever the gateway runs
    _hiredis_pack = None

ScriptCall = Callable[[Sequence[Any], Sequence[Any]], Any]


class WireScript:
    """One script, called as redis-py's ``Script`` is: ``script(keys, args)``."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._head = (b"EVALSHA", self.sha.encode())

    def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        command = (*self._head, len(keys), *keys, *args)
        pool = self.client.connection_pool
        conn = pool.get_connection()
        packed = [_hiredis_pack(command)] if _hiredis_pack is not None else conn.pack_command(*command)
        try:
            return conn.retry.call_with_retry(lambda: self._send(conn, packed),
                                              lambda _error: conn.disconnect())
        finally:
            pool.release(conn)

    def _send(self, conn: Any, packed: Any) -> Any:
        conn.send_packed_command(packed)
        try:
            return conn.read_response()
        except NoScriptError:
            # Redis lost its script cache (a restart, SCRIPT FLUSH, a failover): load, send again.
            conn.send_command("SCRIPT", "LOAD", self.source)
            conn.read_response()
            conn.send_packed_command(packed)
            return conn.read_response()


def script_for(client: Any, source: str, *, wire: bool = True) -> ScriptCall:
    """The fastest way this client can run ``source``."""
    if wire and isinstance(client, redis.Redis):
        return WireScript(client, source)
    script: ScriptCall = client.register_script(source)
    return script
