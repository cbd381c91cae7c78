"""No test asserts how fast something was (issue 23): a duration, a latency or a ratio of
them depends on the machine's load, and a red ``make test`` on a machine that did nothing
wrong teaches everyone to ignore red. What such a test means is checked as a property that
cannot depend on load (an order of service, a count of calls or reads, an injected clock, an
event the code signals), and the measured side is a benchmark (``make bench-fairness``,
``make bench-security``, ...).

The guard walks every test file's AST and fails on an ``assert`` that orders (<, <=, >, >=)
an expression involving a clock (``time.monotonic()``, ``perf_counter()``, ``time.time()``),
a variable assigned from one, or a name that says it is a time (elapsed, duration, latency,
p50/p99, ``*_ms``, ...). Waiting with a deadline for something to happen is fine: a clock
compared with a ``deadline`` is not flagged. Where a bound on time *is* the behaviour under
test, the assertion goes in ALLOWED with the reason, reviewed like code."""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_DIRS = (ROOT / "tests", ROOT / "inference_image" / "tests")

CLOCKS = {"monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "time", "time_ns", "process_time"}
# names that say they hold a time measured on this machine
TIME_NAME = re.compile(r"elapsed|duration|latenc|took|waited|(^|_)p(50|90|95|99)($|_)|^t0$|^t_\w+$|^started$|"
                       r"_ms$|_secs?$|age_s$", re.I)
TIME_ATTR = re.compile(r"elapsed|duration|latenc|took|age_s$|^at$|_ms$|total_seconds", re.I)
ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)

# "file::function": why a bound on time is what the test is about (reviewed; keep it short).
ALLOWED: dict[str, str] = {
    "tests/e2e/test_hardening.py::test_a_spent_monthly_quota_says_when_it_comes_back":
        "Retry-After is compared with the calendar (seconds to the next UTC month), to a minute",
    "tests/integration/test_admission_properties.py::test_lua_buckets_match_the_reference_model":
        "t_ms is the property test's own simulated clock, not a measured time",
    "inference_image/tests/test_provider.py::test_gpu_metric_line_is_embedded_metric_format":
        "the EMF line's Timestamp is the wall clock now (to a minute), not a duration",
}


def _is_clock(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute):  # time.monotonic(), time.time(), self.clock() is not one
        return func.attr in CLOCKS and isinstance(func.value, ast.Name) and func.value.id in {"time", "_time"}
    return isinstance(func, ast.Name) and func.id in CLOCKS - {"time"}


def _timey(node: ast.AST, tainted: set[str]) -> bool:
    for n in ast.walk(node):
        if _is_clock(n):
            return True
        if isinstance(n, ast.Name) and (n.id in tainted or TIME_NAME.search(n.id)):
            return True
        if isinstance(n, ast.Attribute) and TIME_ATTR.search(n.attr):
            return True
    return False


def _names(target: ast.AST) -> Iterator[str]:
    for n in ast.walk(target):
        if isinstance(n, ast.Name):
            yield n.id


def _arithmetic(node: ast.AST) -> bool:
    """Names, numbers and operators only: ``time.monotonic() - t0`` is a time, ``f(rows)`` not."""
    return all(isinstance(n, (ast.Name, ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop,
                              ast.Load, ast.Tuple)) for n in ast.walk(node))


def _tainted(func: ast.AST) -> set[str]:
    """Variables assigned, in this function, from a clock, or by arithmetic from such a
    variable or a name that says it is a time."""
    tainted: set[str] = set()
    changed = True
    while changed:
        changed = False
        for n in ast.walk(func):
            pairs: list[tuple[ast.AST, ast.AST]] = []
            if isinstance(n, ast.Assign):
                pairs = [(t, n.value) for t in n.targets]
            elif isinstance(n, (ast.AnnAssign, ast.AugAssign)) and n.value is not None:
                pairs = [(n.target, n.value)]
            for target, value in pairs:
                clocked = any(_is_clock(v) for v in ast.walk(value))
                if clocked or (_arithmetic(value) and _timey(value, tainted)):
                    new = set(_names(target)) - tainted
                    if new:
                        tainted |= new
                        changed = True
    return tainted


def _is_deadline(node: ast.AST) -> bool:
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return "deadline" in name.lower()


def _a_wait_for_a_deadline(compare: ast.Compare) -> bool:
    """``time.monotonic() < deadline`` (either way round): a wait, not a measurement."""
    operands = [compare.left, *compare.comparators]
    return len(operands) == 2 and any(_is_deadline(o) for o in operands) and any(_is_clock(o) for o in operands)


def timing_assertions(path: Path) -> Iterator[tuple[str, int, str]]:
    """(function, line, source) of each assert in ``path`` that orders a measured time."""
    with warnings.catch_warnings():  # a test file's own escape warnings are not this test's
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        tree = ast.parse(path.read_text(), filename=str(path))
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        tainted = _tainted(func)
        nested = {id(n) for inner in ast.walk(func) if inner is not func
                  and isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(inner)}
        for node in ast.walk(func):
            if not isinstance(node, ast.Assert) or id(node) in nested:
                continue  # a nested function's asserts are its own
            for compare in ast.walk(node.test):
                if (isinstance(compare, ast.Compare) and any(isinstance(op, ORDERING) for op in compare.ops)
                        and not _a_wait_for_a_deadline(compare) and _timey(compare, tainted)):
                    yield func.name, node.lineno, ast.unparse(compare)


def _test_files() -> list[Path]:
    return sorted(p for d in TEST_DIRS for p in d.rglob("*.py"))


def test_no_test_asserts_a_duration_or_a_latency_ratio():
    found = []
    for path in _test_files():
        rel = path.relative_to(ROOT).as_posix()
        for function, line, source in timing_assertions(path):
            if f"{rel}::{function}" not in ALLOWED:
                found.append(f"{rel}:{line} {function}: assert {source}")
    assert not found, ("timing assertions (assert a property, move the timing to a benchmark, or add it to "
                       "ALLOWED with the reason):\n" + "\n".join(found))


def test_every_allowed_entry_still_names_a_timing_assertion():
    """The allow-list shrinks with the tests: an entry that no longer matches is removed."""
    live = {f"{p.relative_to(ROOT).as_posix()}::{f}" for p in _test_files() for f, _, _ in timing_assertions(p)}
    assert set(ALLOWED) <= live, set(ALLOWED) - live


def test_the_guard_sees_the_shapes_it_is_for(tmp_path):
    planted = tmp_path / "test_planted.py"
    planted.write_text('''
import time
def test_measured():
    started = time.monotonic()
    work()
    assert time.monotonic() - started < 2
def test_derived():
    t0 = time.perf_counter(); work(); small = time.perf_counter() - t0
    assert small < 0.5
def test_ratio():
    assert p99_loaded < 2 * p99_unloaded
def test_named():
    assert result.elapsed_ms <= 100
def test_waits_for_an_event():
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, "not done"
def test_counts():
    assert len(calls) >= 1 and timeout_s > 0
''')
    assert [f for f, _, _ in timing_assertions(planted)] == ["test_measured", "test_derived", "test_ratio",
                                                            "test_named"]
