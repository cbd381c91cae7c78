"""Server settings, all from environment variables (the container's only configuration)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from inference_image import MAX_TOKENS, catalog, default_model_dir


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class ModelSetting:
    """One served model: its catalogue facts and where its export lies."""

    id: str
    names: frozenset[str]
    dimensions: int
    max_tokens: int
    model_dir: str


def _models(env: Mapping[str, str]) -> tuple[ModelSetting, ...]:
    """``MAAS_MODELS``: a comma list of catalogued ids to serve (default: every one)."""
    listed = catalog.load()
    wanted = [name.strip() for name in (env.get("MAAS_MODELS") or "").split(",") if name.strip()]
    chosen = listed if not wanted else []
    for name in wanted:
        match = next((m for m in listed if name in m.names), None)
        if match is None:
            raise ValueError(f"MAAS_MODELS names {name!r}, which is not in the catalogue")
        chosen.append(match)
    return tuple(ModelSetting(m.id, m.names, m.dimensions, m.max_tokens,
                              str(m.artifact(env, first=m.id == listed[0].id))) for m in chosen)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    model_dir: str = ".maas/model"
    max_items: int = 2048  # items per request
    max_tokens: int = MAX_TOKENS  # per item, special tokens included
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch_tokens: int = 16384  # padded tokens per ONNX Runtime call
    max_batch_items: int = 256  # items per ONNX Runtime call
    max_wait_ms: float = 2.0  # how long the first queued request waits for batch-mates
    max_queue: int = 1024  # requests waiting for compute; more → 503 + Retry-After
    request_timeout_ms: float = 30000.0  # per-request deadline → 504
    drain_timeout_s: float = 30.0  # SIGTERM: finish in-flight work within this
    call_overhead_tokens: int = -1  # one model call's cost in tokens; -1: by provider
    intra_op_threads: int = 0  # 0: ONNX Runtime's default (one per core)
    providers: str = ""  # comma list overriding TensorRT → CUDA → CPU (e.g. "CPU")
    require_gpu: bool = False  # /ping answers 503 unless a GPU provider passed its checks
    workers: int = 1  # HTTP processes sharing the port, each with its own model sessions
    express_tokens: int = 512  # requests this small also run on a second session; 0: off
    bulk_nice: int = 10  # niceness of the bulk lane's threads where an express lane exists
    log_level: str = "info"
    # The models served, first is the default (a request naming none); empty: the first
    # catalogued model, from model_dir.
    models: tuple[ModelSetting, ...] = ()

    def served(self) -> tuple[ModelSetting, ...]:
        if self.models:
            return self.models
        first = catalog.load()[0]
        return (ModelSetting(first.id, first.names, first.dimensions, first.max_tokens, self.model_dir),)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            host=env.get("HOST") or "127.0.0.1",
            port=_int(env, "PORT", 8080, minimum=0),
            model_dir=env.get("MAAS_MODEL_DIR") or default_model_dir(),
            max_items=_int(env, "MAX_ITEMS", 2048, minimum=1),
            max_body_bytes=_int(env, "MAAS_MAX_BODY_BYTES", 8 * 1024 * 1024, minimum=1),
            max_batch_tokens=_int(env, "MAAS_MAX_BATCH_TOKENS", 16384, minimum=MAX_TOKENS),
            max_batch_items=_int(env, "MAAS_MAX_BATCH_ITEMS", 256, minimum=1),
            max_wait_ms=_float(env, "MAAS_MAX_WAIT_MS", 2.0),
            max_queue=_int(env, "MAAS_MAX_QUEUE", 1024, minimum=0),
            request_timeout_ms=_float(env, "MAAS_REQUEST_TIMEOUT_MS", 30000.0),
            drain_timeout_s=_float(env, "MAAS_DRAIN_TIMEOUT_S", 30.0),
            call_overhead_tokens=_int(env, "MAAS_CALL_OVERHEAD_TOKENS", -1, minimum=-1),
            intra_op_threads=_int(env, "MAAS_INTRA_OP_THREADS", 0, minimum=0),
            providers=env.get("MAAS_PROVIDERS", ""),
            require_gpu=_bool(env, "MAAS_REQUIRE_GPU"),
            workers=_int(env, "MAAS_WORKERS", 1, minimum=1),
            express_tokens=_int(env, "MAAS_EXPRESS_LANE_TOKENS", 512, minimum=0),
            bulk_nice=_int(env, "MAAS_BULK_NICE", 10, minimum=0),
            log_level=(env.get("MAAS_LOG_LEVEL") or "info").lower(),
            models=_models(env),
        )
