"""The local stack behind ``make dev`` (and the e2e tests): a private redis-server, moto's
server as DynamoDB, the inference server, the flusher loop, the webhook delivery loop and the
API Gateway emulator serving the real handlers on the routes of template.yaml.

    python -m infra.local.stack            # ports from MAAS_*_PORT or the defaults
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra.local.services import ROOT, Service, create_table, inference_service, moto_service, redis_service


@dataclass
class StackConfig:
    api_port: int = int(os.environ.get("MAAS_API_PORT", 3000))
    inference_port: int = int(os.environ.get("MAAS_INFERENCE_PORT", 8080))
    redis_port: int = int(os.environ.get("MAAS_REDIS_PORT", 6380))
    dynamodb_port: int = int(os.environ.get("MAAS_DYNAMODB_PORT", 5100))
    state_dir: Path = ROOT / ".maas"
    model_dir: Path = Path(os.environ.get("MAAS_MODEL_DIR", ROOT / ".maas" / "model"))
    table_name: str = "maas-local"
    flush_interval_s: float = 1.0
    webhook_interval_s: float = 0.5
    api_workers: int = int(os.environ.get("MAAS_API_WORKERS", 4))
    inference_env: dict[str, str] = field(default_factory=dict)


def _pepper(state_dir: Path) -> str:
    """A per-checkout pepper, kept so keys hashed by one run verify in the next."""
    path = state_dir / "pepper"
    if not path.exists():
        from gateway.cli.admin import write_secret

        write_secret(path, secrets.token_hex(32))
    return path.read_text().strip()


class LocalStack:
    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.logs = self.config.state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.redis: Service = redis_service(self.config.redis_port, self.config.state_dir / "redis", self.logs)
        self.dynamodb: Service = moto_service(self.config.dynamodb_port, self.logs)
        self.inference: Service = inference_service(self.config.inference_port, self.config.model_dir, self.logs,
                                                    self.config.inference_env)
        self.api = None
        self.container = None
        self.admin_key: str | None = None
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._webhooks: threading.Thread | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.config.api_port}"

    def handler_env(self) -> dict[str, str]:
        """What the Lambda functions see: the same variables as env.json.example, on localhost."""
        c = self.config
        return {
            "MAAS_STAGE": "local",
            "MAAS_TABLE_NAME": c.table_name,
            "MAAS_DYNAMODB_ENDPOINT": f"http://127.0.0.1:{c.dynamodb_port}",
            "MAAS_REDIS_URL": f"redis://127.0.0.1:{c.redis_port}/0",
            "MAAS_INFERENCE_URL": f"http://127.0.0.1:{c.inference_port}",
            "MAAS_KEY_PEPPER": _pepper(c.state_dir),
            "MAAS_WEBHOOK_ALLOW_LOCAL_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "POWERTOOLS_SERVICE_NAME": "maas-gateway",
            "POWERTOOLS_METRICS_NAMESPACE": "MaasGateway",
            "MAAS_LAMBDA_LOG": str(self.logs / "lambda.log"),
            "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
        }

    def start(self, progress=print) -> LocalStack:  # type: ignore[no-untyped-def]
        os.environ.update(self.handler_env())
        from gateway.cli.admin import bootstrap, write_secret
        from gateway.config import Settings
        from gateway.wiring import Container

        # The stack's own clients: never the process-wide container a test may swap.
        self.container = Container(Settings.from_env(self.handler_env()))

        progress(f"starting redis-server on :{self.config.redis_port}")
        self.redis.start()
        progress(f"starting DynamoDB (moto server) on :{self.config.dynamodb_port}")
        self.dynamodb.start()
        create_table(self.container.dynamodb, self.config.table_name)
        result = bootstrap(c=self.container)
        self.admin_key = result["key"]
        write_secret(self.config.state_dir / "admin_key", self.admin_key)
        progress(f"starting the inference server on :{self.config.inference_port} (loading the model)")
        self.inference.start(timeout_s=180)
        self._flusher = threading.Thread(target=self._flush_loop, name="flusher", daemon=True)
        self._flusher.start()
        from gateway.cli.webhooks import run_forever

        self._webhooks = threading.Thread(target=run_forever, name="webhooks", daemon=True,
                                          args=(self.container, self.config.webhook_interval_s, self._stop))
        self._webhooks.start()
        progress(f"starting the API Gateway emulator on :{self.config.api_port}")
        from infra.local.apigw import ApiGatewayEmulator

        self.api = ApiGatewayEmulator(port=self.config.api_port, workers=self.config.api_workers,
                                      env=self.handler_env()).start()
        return self

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.config.flush_interval_s):
            try:
                self.container.flusher.flush()
            except Exception as error:  # Redis or DynamoDB down: try again next tick
                print(f"flusher: {type(error).__name__}: {error}", file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()
        if self.api is not None:
            self.api.stop()
        for loop in (self._flusher, self._webhooks):
            if loop is not None:
                loop.join(timeout=5)
        for service in (self.inference, self.dynamodb, self.redis):
            service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the maas-gateway local stack in the foreground.")
    parser.parse_args()
    stack = LocalStack()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        stack.start(progress=lambda line: print(f"[maas] {line}", flush=True))
        print(
            "\nmaas-gateway local stack is up\n"
            f"  API (API Gateway emulator)  {stack.api_url}   (GET /health)\n"
            f"  inference server            http://127.0.0.1:{stack.config.inference_port}\n"
            f"  redis                       redis://127.0.0.1:{stack.config.redis_port}/0\n"
            f"  DynamoDB (moto)             http://127.0.0.1:{stack.config.dynamodb_port}\n"
            f"  admin key (also in .maas/admin_key): {stack.admin_key}\n"
            f"  logs: {stack.logs}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        print("\n[maas] stopping", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    time.tzset()
    sys.exit(main())
