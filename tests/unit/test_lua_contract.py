"""The Lua <-> Python seam: each script body uses the names its spec defines, and only those.

gateway/adapters/lua_scripts.py names every script's KEYS and ARGV in order and generates the
header that binds them (``k_<name>``, ``a_<name>``); a body that spelled an index by hand, or
used a name its spec lacks (nil at run time), or a spec naming something the body never reads
(a list position both sides would have to keep for nothing), fails here.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from gateway.adapters.lua_scripts import PRELUDE, SCRIPTS, Script

NAME = re.compile(r"\b([ka])_([a-z0-9_]+)\b")


def code(text: str) -> str:
    """Lua without its comments and string literals (which may mention KEYS or a name)."""
    text = re.sub(r"--[^\n]*", "", text)
    return re.sub(r"'[^'\n]*'", "''", text)


def defined(script: Script) -> set[tuple[str, str]]:
    names = {("k", n) for n in (*script.keys, *filter(None, [script.keys_rest]))}
    return names | {("a", n) for n in (*script.args, *filter(None, [script.args_rest]))}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.file)
def test_the_body_never_indexes_keys_or_argv(script: Script) -> None:
    assert not re.search(r"\b(KEYS|ARGV)\b", code(script.body()))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.file)
def test_the_body_uses_exactly_the_names_its_spec_defines(script: Script) -> None:
    used = set(NAME.findall(code(script.body())))
    assert used - defined(script) == set(), "names the spec does not define"
    assert defined(script) - used == set(), "names the script never uses"


def test_every_script_file_has_a_spec_and_the_prelude_reads_no_names() -> None:
    files = {p.name for p in resources.files("gateway.lua").iterdir() if p.name.endswith(".lua")}
    assert files == {s.file for s in SCRIPTS} | {PRELUDE}
    prelude = code(resources.files("gateway.lua").joinpath(PRELUDE).read_text())
    assert not re.search(r"\b(KEYS|ARGV)\b", prelude) and not NAME.findall(prelude)


def test_the_header_binds_each_name_to_its_position() -> None:
    script = Script("x.lua", keys=("a", "b"), args=("c",), args_rest="d", optional=("c",))
    assert script.header().splitlines() == ["local k_a = KEYS[1]", "local k_b = KEYS[2]", "local a_c = ARGV[1]",
                                            "local a_d = {unpack(ARGV, 2)}"]
    assert script.key_list({"b": "kb", "a": "ka"}, ["more"]) == ["ka", "kb", "more"]
    assert script.arg_list({}, ["x"]) == ["x"]  # the optional one left out


def test_a_missing_or_unknown_name_is_refused_before_redis_sees_it() -> None:
    script = Script("x.lua", keys=("a", "b"), args=("c", "d"), optional=("c", "d"))
    with pytest.raises(ValueError, match="missing"):
        script.key_list({"a": "ka"})
    with pytest.raises(ValueError, match="unknown"):
        script.key_list({"a": "ka", "b": "kb", "z": "kz"})
    with pytest.raises(ValueError, match="left out before"):
        script.arg_list({"d": 1})
