"""Connections to Redis and MemoryDB: the one place that decides how TLS is verified.

A ``rediss://`` URL always verifies the server's certificate against a CA (the system trust
store, or ``tls_ca_file``). Whether the certificate must also name the host is a separate,
explicit choice: MemoryDB's cluster discovery (CLUSTER SLOTS) may hand out node IP addresses,
which its certificates do not name, so with cluster mode the hostname check may have to be off
while the chain is still verified (template.yaml sets ``MAAS_REDIS_TLS_CHECK_HOSTNAME``).
"""

from __future__ import annotations

from typing import Any

import redis


def tls_options(url: str, *, check_hostname: bool, ca_file: str | None = None) -> dict[str, Any]:
    """redis-py's TLS keyword arguments for ``url`` (none for a plain ``redis://`` URL)."""
    if not url.startswith("rediss://"):
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": check_hostname}
    if ca_file:
        options["ssl_ca_certs"] = ca_file
    return options


def connect(url: str, *, cluster: bool, username: str | None, password: str | None, timeout_s: float,
            tls_check_hostname: bool = True, tls_ca_file: str | None = None) -> redis.Redis | redis.RedisCluster:
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "username": username,
        "password": password,
        "health_check_interval": 30,
        **tls_options(url, check_hostname=tls_check_hostname, ca_file=tls_ca_file),
    }
    if cluster:
        return redis.RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)
