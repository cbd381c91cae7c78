"""Shared fixtures: real local services on free ports (redis-server, moto's DynamoDB
server, the project's own DynamoDB), started by the tests so the tests can also kill them."""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local.services import (
    Service,
    create_table,
    dynamodb_service,
    free_port,
    moto_service,
    redis_service,
)
from infra.local.template import load_template

# boto3 needs credentials and a region even for a local endpoint; never real ones in tests.
os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING",
})
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def service_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


def _dies_with_the_session(service: Service) -> Service:
    # Started from pytest's main thread: a test run killed with -9 leaves no server behind.
    service.die_with_parent = True
    return service


@pytest.fixture(scope="session")
def redis_service_session(tmp_path_factory: pytest.TempPathFactory, service_logs: Path) -> Iterator[Service]:
    service = _dies_with_the_session(redis_service(free_port(), tmp_path_factory.mktemp("redis"), service_logs)).start()
    yield service
    service.stop()


@pytest.fixture
def redis_url(redis_service_session: Service) -> Iterator[str]:
    import redis

    client = redis.Redis(port=redis_service_session.port)
    client.flushall()
    yield f"redis://127.0.0.1:{redis_service_session.port}/0"
    client.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Service]:
    """A private redis-server a test may kill and restart."""
    service = redis_service(free_port(), tmp_path / "redis", tmp_path).start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def moto(service_logs: Path) -> Iterator[Service]:
    service = _dies_with_the_session(moto_service(free_port(), service_logs)).start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def local_dynamodb(tmp_path_factory: pytest.TempPathFactory, service_logs: Path) -> Iterator[Service]:
    """infra/local/dynamodb, SQLite-backed: the DynamoDB the stacks and most tests talk to
    (tests/performance/dynamodb_conformance.py holds it to the product's calls)."""
    db_path = tmp_path_factory.mktemp("dynamodb") / "dynamodb.sqlite3"
    service = dynamodb_service(free_port(), db_path, service_logs).start()
    yield service
    service.stop()


@pytest.fixture
def dynamodb_endpoint(local_dynamodb: Service) -> str:
    return f"http://127.0.0.1:{local_dynamodb.port}"


def make_settings(redis_url: str, dynamodb_endpoint: str, **overrides):  # type: ignore[no-untyped-def]
    from gateway.config import Settings

    return Settings(
        table_name=f"t-{uuid.uuid4().hex[:12]}", dynamodb_endpoint=dynamodb_endpoint, redis_url=redis_url,
        key_pepper="test-pepper", inference_url=overrides.pop("inference_url", "http://127.0.0.1:9"),
        **overrides,
    )


@pytest.fixture
def container(redis_url: str, dynamodb_endpoint: str):  # type: ignore[no-untyped-def]
    """A fully wired container on a fresh table and an empty Redis, plans loaded."""
    from gateway.domain.plans import load_catalog
    from gateway.wiring import Container

    c = Container(make_settings(redis_url, dynamodb_endpoint))
    create_table(c.dynamodb, c.settings.table_name)
    catalog = load_catalog()
    for plan in catalog.plans:
        c.accounts.put_plan(plan, catalog.version)
    return c


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every AWS call a function made in this session must be allowed by that function's role in
    template.yaml (tests/iam): a call no statement allows fails the run, naming it. Under
    pytest-xdist the controller checks them all: each worker hands its calls over (below)."""
    from tests.iam.recorder import CALLS, denied
    from tests.iam.roles import Resolver, roles

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its exit status is not the run's
        workeroutput["iam_calls"] = pickle.dumps(CALLS)
        return
    if not CALLS:
        return
    problems = denied(CALLS, roles(), Resolver(load_template()))
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["", f"IAM: {len(problems)} AWS request(s) no statement of the function's role allows:",
                 *(f"  {p}" for p in problems)]
        for line in lines:
            reporter.write_line(line, red=True) if reporter else print(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist, on the controller: a worker finished; its AWS calls join the check above
    (a worker that crashed fails the run anyway)."""
    from tests.iam.recorder import CALLS

    calls = getattr(node, "workeroutput", {}).get("iam_calls")
    if calls:
        CALLS.extend(pickle.loads(calls))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist with --dist loadgroup (`make test`): a test file is one unit of work, so its
    module fixtures (a stack of its own, a TLS cluster) start once; files marked with the same
    ``xdist_group`` go to one worker, one after another (they share a session fixture's
    services or a directory, or are too heavy to run beside each other)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class FilesAndGroups(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):  # marked: its group
                return super()._split_scope(nodeid)
            return nodeid.split("::", 1)[0]  # its file

    return FilesAndGroups(config, log)
