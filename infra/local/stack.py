"""The local stack behind ``make dev`` (and the e2e tests): a private redis-server, a DynamoDB
endpoint, the inference server, the flusher, webhook delivery and projector loops and the API
Gateway emulator serving the real handlers on the routes of template.yaml.

It behaves as the managed services it stands in for: Redis is durable as MemoryDB is (an
append-only file fsynced before every reply) and has one ACL user with a generated password;
whatever crashes (redis-server, DynamoDB, the inference server, the flusher, the webhook
and projector loops, a Lambda copy) is restarted by infra/local/supervisor.py with backoff,
and /health shows it. The state lives under the state dir (.maas/) and survives Ctrl-C and
the next ``make dev``:

    .maas/redis/            redis.conf and the append-only file (usage streams, limits, quotas)
    .maas/dynamodb/         the DynamoDB emulator's SQLite file (tenants, keys, plans, the ledger)
    .maas/pepper            the key pepper (keys hashed in one run verify in the next)
    .maas/redis_password    the Redis user's password (mode 0600)
    .maas/admin_key         the bootstrap admin key (reused while it is valid)
    .maas/stack-status.json the supervisor's view (MAAS_LOCAL_STATUS_FILE)
    .maas/logs/             one log per service, supervisor.log for crashes and restarts
    .maas/model/            the exported model: not state, never reset

    python -m infra.local.stack            # ports from MAAS_*_PORT or the defaults
    python -m infra.local.stack --reset    # delete the state above (not the model) first
"""

from __future__ import annotations

import argparse
import fcntl
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from infra.local.services import (
    ROOT,
    Service,
    batches_service,
    create_table,
    dynamodb_service,
    files_service,
    flusher_service,
    inference_service,
    projector_service,
    redis_service,
    webhooks_service,
)
from infra.local.supervisor import ServiceUnit, Supervisor, WorkerPoolUnit

REDIS_USERNAME = "maas"


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass
class StackConfig:
    api_port: int = field(default_factory=lambda: _env_int("MAAS_API_PORT", 3000))
    inference_port: int = field(default_factory=lambda: _env_int("MAAS_INFERENCE_PORT", 8080))
    redis_port: int = field(default_factory=lambda: _env_int("MAAS_REDIS_PORT", 6380))
    dynamodb_port: int = field(default_factory=lambda: _env_int("MAAS_DYNAMODB_PORT", 5100))
    files_port: int = field(default_factory=lambda: _env_int("MAAS_FILES_PORT", 5300))
    state_dir: Path = field(default_factory=lambda: Path(os.environ.get("MAAS_STATE_DIR") or ROOT / ".maas"))
    model_dir: Path = field(default_factory=lambda: Path(os.environ.get("MAAS_MODEL_DIR") or ROOT / ".maas" / "model"))
    table_name: str = "maas-local"
    flush_interval_s: float = 1.0
    webhook_interval_s: float = 0.5
    batch_interval_s: float = 0.5
    projector_interval_s: float = 0.5
    api_workers: int = field(default_factory=lambda: _env_int("MAAS_API_WORKERS", 4))
    inference_env: dict[str, str] = field(default_factory=dict)
    # The largest request the endpoint takes, on top of each plan's: what the local CPU
    # completes well inside the deadline while others are served (docs/BENCHMARKS.md).
    max_request_tokens: int = 8192
    # MemoryDB acknowledges a write once it is durable; so does this Redis (appendfsync always).
    redis_durable: bool = True


# -------------------------------------------------------------------------------- the state dir


class StateDir:
    """Where the stack keeps what must survive a restart (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "logs"
        self.redis = root / "redis"
        self.dynamodb = root / "dynamodb"
        self.files = root / "files"
        self.pepper = root / "pepper"
        self.redis_password = root / "redis_password"
        self.admin_key = root / "admin_key"
        self.status_file = root / "stack-status.json"
        self.lock_file = root / "stack.lock"

    # What --reset deletes, and why a person would care.
    def resettable(self) -> list[tuple[Path, str]]:
        return [
            (self.redis, "Redis's append-only file: limits, quotas, usage not yet in the ledger"),
            (self.dynamodb, "DynamoDB's tables: tenants, keys, plans, the ledger"),
            (self.files, "the Batch API's files: uploads, batches' output and error files"),
            (self.pepper, "the key pepper: every API key issued so far stops working"),
            (self.admin_key, "the bootstrap admin key"),
            (self.redis_password, "the Redis user's password"),
            (self.status_file, "the supervisor's status file"),
            (self.logs, "the logs"),
        ]

    def reset(self) -> list[tuple[str, str]]:
        """Delete the state (never the exported model); what was there and is gone now."""
        deleted = []
        for path, meaning in self.resettable():
            if path.is_dir():
                shutil.rmtree(path)
                deleted.append((f"{path.name}/", meaning))
            elif path.exists():
                path.unlink()
                deleted.append((path.name, meaning))
        return deleted


def local_secret(path: Path, make: Callable[[], str]) -> str:
    """A secret kept in a file of mode 0600, made on first use."""
    if not path.exists():
        from gateway.cli.admin import write_secret

        write_secret(path, make())
    os.chmod(path, 0o600)
    return path.read_text().strip()


class StateLock:
    """One stack per state dir: an exclusive flock, released when the process ends, however."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def acquire(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open while the stack runs
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise RuntimeError(f"another local stack (pid {holder}) uses {self.path.parent}: stop it first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the flock
            self._handle = None


def ensure_admin_key(container: Any, key_file: Path) -> tuple[str, bool]:
    """Load the plan catalog into the table (plans stay current) and return the admin key in
    key_file while it still authenticates with the admin scope, else a newly issued one
    (written to key_file). The flag says whether a new key was issued."""
    from gateway.cli.admin import bootstrap, write_secret
    from gateway.domain.plans import DEFAULT_PLANS_FILE, load_catalog
    from gateway.domain.scopes import Scope
    from gateway.errors import AuthenticationError, PermissionDeniedError

    if key_file.exists():
        key = key_file.read_text().strip()
        try:
            container.authenticator.authenticate(key, Scope.ADMIN, fresh=True)
        except (AuthenticationError, PermissionDeniedError):
            pass  # unknown here (a reset, an emulator that kept nothing), revoked or expired
        else:
            catalog = load_catalog(DEFAULT_PLANS_FILE)
            for plan in catalog.plans:
                container.accounts.put_plan(plan, catalog.version)
            return key, False
    issued = bootstrap(c=container)  # loads the plans too
    write_secret(key_file, issued["key"])
    return issued["key"], True


# -------------------------------------------------------------------------------- the stack


class LocalStack:
    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = c = config or StackConfig()
        self.state = StateDir(c.state_dir)
        self.logs = self.state.logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.redis_password = local_secret(self.state.redis_password, lambda: secrets.token_urlsafe(32))
        self.redis: Service = redis_service(c.redis_port, self.state.redis, self.logs, durable=c.redis_durable,
                                            user=(REDIS_USERNAME, self.redis_password))
        self.dynamodb = dynamodb_service(c.dynamodb_port, self.state.dynamodb / "maas.sqlite3", self.logs)
        self.inference: Service = inference_service(c.inference_port, c.model_dir, self.logs, c.inference_env)
        self.flusher: Service = flusher_service(c.flush_interval_s, self.handler_env(), self.logs)
        self.webhooks: Service = webhooks_service(c.webhook_interval_s, self.handler_env(), self.logs)
        self.projector: Service = projector_service(c.projector_interval_s, self.handler_env(), self.logs)
        self.batches: Service = batches_service(c.batch_interval_s, self.handler_env(), self.logs)
        self.files: Service = files_service(c.files_port, self.handler_env(), self.logs)
        self.services = (self.redis, self.dynamodb, self.inference, self.flusher, self.webhooks, self.projector,
                         self.batches, self.files)
        for service in self.services:
            service.die_with_parent = True  # started from this thread or a supervisor thread
        self.supervisor = Supervisor(self.state.status_file, self.logs / "supervisor.log")
        self.api: Any = None
        self.container: Any = None
        self.admin_key: str | None = None
        self._lock = StateLock(self.state.lock_file)
        self._saved_env: dict[str, str | None] = {}
        self._provision_lock = threading.Lock()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.config.api_port}"

    @property
    def status_file(self) -> Path:
        return self.state.status_file

    def handler_env(self) -> dict[str, str]:
        """What the Lambda functions (and the flusher) see: env.json.example's variables, on localhost."""
        c = self.config
        return {
            "MAAS_STAGE": "local",
            "MAAS_TABLE_NAME": c.table_name,
            "MAAS_DYNAMODB_ENDPOINT": f"http://127.0.0.1:{c.dynamodb_port}",
            "MAAS_REDIS_URL": f"redis://127.0.0.1:{c.redis_port}/0",
            "MAAS_REDIS_USERNAME": REDIS_USERNAME,
            "MAAS_REDIS_PASSWORD": self.redis_password,
            "MAAS_INFERENCE_URL": f"http://127.0.0.1:{c.inference_port}",
            "MAAS_KEY_PEPPER": local_secret(self.state.pepper, lambda: secrets.token_hex(32)),
            "MAAS_LOCAL_STATUS_FILE": str(self.state.status_file),
            "MAAS_WEBHOOK_ALLOW_LOCAL_HTTP": "true",
            "MAAS_MAX_REQUEST_TOKENS": str(c.max_request_tokens),
            "MAAS_FILES_DIR": str(self.state.files),
            "MAAS_FILES_URL": f"http://127.0.0.1:{c.files_port}",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "POWERTOOLS_SERVICE_NAME": "maas-gateway",
            "POWERTOOLS_METRICS_NAMESPACE": "MaasGateway",
            "MAAS_LAMBDA_LOG": str(self.logs / "lambda.log"),
            "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
        }

    def redis_client(self) -> Any:
        """A client of the stack's Redis, as its user (the default user is disabled)."""
        import redis

        return redis.Redis(port=self.config.redis_port, username=REDIS_USERNAME, password=self.redis_password)

    def start(self, progress: Callable[[str], None] = print) -> LocalStack:
        self._lock.acquire()
        try:
            self._start(progress)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, progress: Callable[[str], None]) -> None:
        c = self.config
        env = self.handler_env()
        # The emulator's worker processes inherit this environment; what it was is put back
        # when the stack stops (a test session runs stacks in its own process).
        self._saved_env = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        from gateway.config import Settings
        from gateway.wiring import Container

        # The stack's own clients: never the process-wide container a test may swap.
        self.container = Container(Settings.from_env(env))

        progress(f"starting redis-server on :{c.redis_port} (append-only file in {self.state.redis})")
        self.redis.start()
        progress(f"starting DynamoDB (infra/local/dynamodb) on :{c.dynamodb_port}")
        self.dynamodb.start()
        self._provision_dynamodb()
        progress(f"starting the inference server on :{c.inference_port} (loading the model)")
        self.inference.start()
        progress(f"starting the flusher (every {c.flush_interval_s:g} s)")
        self.flusher.start()
        progress(f"starting the webhook delivery loop (every {c.webhook_interval_s:g} s)")
        self.webhooks.start()
        progress(f"starting the projector (admin changes Redis missed, every {c.projector_interval_s:g} s)")
        self.projector.start()
        progress(f"starting the batch worker (every {c.batch_interval_s:g} s) and its files on :{c.files_port}")
        self.batches.start()
        self.files.start()
        progress(f"starting the API Gateway emulator on :{c.api_port}")
        from infra.local.apigw import ApiGatewayEmulator

        self.api = ApiGatewayEmulator(port=c.api_port, workers=c.api_workers, env=env).start()

        self.supervisor.watch(ServiceUnit(self.redis))
        self.supervisor.watch(ServiceUnit(self.dynamodb, "dynamodb", after_restart=self._provision_dynamodb))
        self.supervisor.watch(ServiceUnit(self.inference))
        self.supervisor.watch(ServiceUnit(self.flusher))
        self.supervisor.watch(ServiceUnit(self.webhooks))
        self.supervisor.watch(ServiceUnit(self.batches))
        self.supervisor.watch(ServiceUnit(self.files))
        self.supervisor.watch(ServiceUnit(self.projector))
        for pool in self.api.app.pools.values():
            self.supervisor.watch(WorkerPoolUnit(pool))
        self.supervisor.start()

    def _provision_dynamodb(self) -> None:
        """The table, the plans and a valid admin key: at start, and after DynamoDB restarted."""
        with self._provision_lock:
            create_table(self.container.dynamodb, self.config.table_name)
            self.admin_key, issued = ensure_admin_key(self.container, self.state.admin_key)
        if issued and self.supervisor.units:  # a restart lost the tables: say where the new key is
            self.supervisor.log(f"DynamoDB came back empty: new admin key in {self.state.admin_key}")

    def stop(self) -> None:
        """Stop everything this stack started, children included; safe to call again."""
        self.supervisor.halt()  # no restart from now on
        if self.api is not None:
            self.api.stop()  # and its worker processes
            self.api = None
        for service in (self.files, self.batches, self.projector, self.webhooks, self.flusher, self.inference,
                        self.dynamodb, self.redis):
            service.stop()
        self.supervisor.stop()
        self._lock.release()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}


# -------------------------------------------------------------------------------- make dev


def _stop_on(*signals: signal.Signals) -> None:
    """SIGTERM and SIGHUP stop the stack as Ctrl-C does."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in signals:
        signal.signal(sig, interrupt)


def _stop_resource_tracker() -> None:
    """multiprocessing's helper process (started with the first Lambda copy) ends when this
    process does, a moment later; end it now, so nothing the stack started outlives it."""
    from multiprocessing import resource_tracker

    stop = getattr(resource_tracker._resource_tracker, "_stop", None)  # noqa: SLF001 - no public API
    if stop is not None:
        stop()


def reset(config: StackConfig) -> None:
    state = StateDir(config.state_dir)
    lock = StateLock(state.lock_file).acquire()  # never under a running stack
    try:
        deleted = state.reset()
    finally:
        lock.release()
    if not deleted:
        print(f"[maas] --reset: no local state in {state.root}", flush=True)
        return
    print(f"[maas] --reset: deleted the local state in {state.root} (the exported model is kept):", flush=True)
    for name, meaning in deleted:
        print(f"[maas]   {name:<20} {meaning}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.stack",
                                     description="Run the maas-gateway local stack in the foreground.")
    parser.add_argument("--reset", action="store_true",
                        help="first delete the local state (Redis, DynamoDB, pepper, admin key, logs; "
                             "not the exported model) and start clean")
    args = parser.parse_args(argv)
    config = StackConfig()
    # Ctrl-C stops the stack even when it was started from a shell or a runner that ignores
    # SIGINT (a non-interactive shell's background job does; Python then keeps it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _stop_on(signal.SIGTERM, signal.SIGHUP)
    try:
        if args.reset:
            reset(config)
        stack = LocalStack(config)
    except RuntimeError as error:
        print(f"[maas] {error}", file=sys.stderr, flush=True)
        return 1
    try:
        stack.start(progress=lambda line: print(f"[maas] {line}", flush=True))  # stops what it started on failure
    except KeyboardInterrupt:
        print("\n[maas] stopped", flush=True)
        return 0
    except (RuntimeError, TimeoutError) as error:
        print(f"[maas] the stack could not start: {error}", file=sys.stderr, flush=True)
        return 1
    try:
        print(
            "\nmaas-gateway local stack is up\n"
            f"  API (API Gateway emulator)  {stack.api_url}   (GET /health)\n"
            f"  web console                 {stack.api_url}/console/   (sign in with an API key)\n"
            f"  inference server            http://127.0.0.1:{config.inference_port}\n"
            f"  redis                       redis://{REDIS_USERNAME}@127.0.0.1:{config.redis_port}/0"
            f"   (password in {stack.state.redis_password})\n"
            f"  DynamoDB (local emulator)   http://127.0.0.1:{config.dynamodb_port}\n"
            f"  admin key (also in {stack.state.admin_key}): {stack.admin_key}\n"
            f"  state: {config.state_dir} (kept across restarts; `make dev-reset` starts clean)\n"
            f"  supervisor: {stack.status_file}, logs in {stack.logs}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave children behind
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        print("\n[maas] stopping", flush=True)
        stack.stop()
        _stop_resource_tracker()
        print("[maas] stopped", flush=True)
    return 0


if __name__ == "__main__":
    time.tzset()
    sys.exit(main())
