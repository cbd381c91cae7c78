"""The Lua <-> Python seam: every script's KEYS and ARGV, named once, in order.

A ``Script`` is the one definition both sides read. Python builds the two lists from named
values (``keys``, ``args``); the script's text gets a generated header that binds the same
names at load time (``local k_status = KEYS[2]``, ``local a_tokens = ARGV[7]``), so a body
says ``k_status`` and never ``KEYS[2]``. ``prelude.lua`` (the shared helpers: ``int``,
``money``, ``emit``, the clock, the buckets) goes between the header and the body of each
script that asks for it. tests/unit/test_lua_contract.py holds each body to its spec.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Any

PRELUDE = "prelude.lua"


def _text(name: str) -> str:
    return resources.files("gateway.lua").joinpath(name).read_text()


@dataclass(frozen=True)
class Script:
    """One script file: its KEYS and ARGV by name, in order. ``keys_rest``/``args_rest`` name
    a table of whatever follows the named ones (a variable number); an ARGV name in ``optional``
    may be left out (it and all after it: Lua reads it as nil)."""

    file: str
    keys: tuple[str, ...]
    args: tuple[str, ...] = ()
    keys_rest: str | None = None
    args_rest: str | None = None
    optional: tuple[str, ...] = ()
    prelude: bool = False

    def header(self) -> str:
        lines = [f"local k_{name} = KEYS[{i}]" for i, name in enumerate(self.keys, 1)]
        lines += [f"local a_{name} = ARGV[{i}]" for i, name in enumerate(self.args, 1)]
        if self.keys_rest:
            lines.append(f"local k_{self.keys_rest} = {{unpack(KEYS, {len(self.keys) + 1})}}")
        if self.args_rest:
            lines.append(f"local a_{self.args_rest} = {{unpack(ARGV, {len(self.args) + 1})}}")
        return "\n".join(lines) + "\n"

    def body(self) -> str:
        return _text(self.file)

    @cached_property
    def source(self) -> str:
        """What Redis runs: the header, the prelude when asked for, the body."""
        return self.header() + (_text(PRELUDE) if self.prelude else "") + self.body()

    def key_list(self, values: Mapping[str, str], rest: Iterable[str] = ()) -> list[str]:
        return _ordered(self, "KEYS", self.keys, values, ()) + list(rest)

    def arg_list(self, values: Mapping[str, Any], rest: Sequence[Any] = ()) -> list[Any]:
        return _ordered(self, "ARGV", self.args, values, self.optional) + list(rest)


def _ordered(script: Script, what: str, names: tuple[str, ...], values: Mapping[str, Any],
             optional: tuple[str, ...]) -> list[Any]:
    unknown = set(values) - set(names)
    missing = [n for n in names if n not in values and n not in optional]
    if unknown or missing:
        raise ValueError(f"{script.file} {what}: unknown {sorted(unknown)}, missing {missing}")
    out = [values[n] for n in names if n in values]
    if any(n not in values for n in names[:len(out)]):
        raise ValueError(f"{script.file} {what}: an optional value is left out before a given one")
    return out


ADMIT = Script(
    "admit.lua", prelude=True,
    keys=("key_states", "status", "buckets", "month", "inflight", "cfg", "key_cfg", "key_inflight", "key_month",
          "grants", "credit", "events", "active"),
    args=("key_id", "record_expiry", "rpm", "tpm", "monthly", "max_concurrent", "tokens", "request_id",
          "lease_ms", "month_ttl", "tiers", "tenant_id", "requests", "lane", "now"),
    optional=("now",),
)
GATE = Script(
    "gate.lua", prelude=True,
    keys=("key_states", "status", "buckets", "cfg", "key_cfg"),
    args=("key_id", "record_expiry", "rpm", "tpm", "now"),
    optional=("now",),
)
SETTLE = Script(
    "settle.lua", prelude=True,
    keys=("inflight", "key_inflight", "month", "key_month", "credit", "usage", "events", "cfg", "key_cfg",
          "grants", "active"),
    args=("request_id", "outcome", "tokens", "cost", "debits", "key_id", "tenant_id", "month", "now",
          "unit", "key_holds", "month_ttl", "once"),
    args_rest="fields",
)
SEED = Script(
    "seed.lua", prelude=True,
    keys=("cfg", "status", "key_states", "key_cfg", "month", "grants", "credit", "usage"),
    args=("state",),
    keys_rest="more",
)
GRANT = Script("grant.lua", keys=("cfg", "grants", "credit"), args=("grant_id", "expiry", "amount", "now"))
PROJECT = Script("project.lua", keys=("cfg", "target"), args_rest="values")
DEACTIVATE = Script("deactivate.lua", keys=("index", "usage", "events"), args=("unit",))
PRUNE_CONSUMERS = Script("prune_consumers.lua", keys=("stream",), args=("group", "min_idle", "keep"))

SCRIPTS = (ADMIT, GATE, SETTLE, SEED, GRANT, PROJECT, DEACTIVATE, PRUNE_CONSUMERS)
