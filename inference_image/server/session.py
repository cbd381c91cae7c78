"""Compute: one ONNX Runtime session over the exported model.

Providers are tried in the order TensorRT → CUDA → CPU among ``ort.get_available_providers()``;
a provider is kept only when a session built with it really runs it (ORT silently falls back
when CUDA libraries are missing), a warm-up run returns finite, normalised vectors, and it
reproduces the export's ``reference.npz`` (sentence-transformers vectors) to cosine >= 0.9999
(``MAAS_MIN_COSINE``): a TensorRT fp16 engine that drifts further is dropped for the next
provider.
Lifecycle names follow Triton: ``initialize``, ``execute``, ``finalize``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from inference_image import EMBEDDING_DIM, MAX_TOKENS, MIN_COSINE, MODEL_FILE, REFERENCE_FILE

log = logging.getLogger("inference_image.session")

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = frozenset(PREFERENCE[:2])
_SHORT = {"tensorrt": PREFERENCE[0], "trt": PREFERENCE[0], "cuda": PREFERENCE[1],
          "cpu": PREFERENCE[2]}


def _resolve(names: str) -> list[str]:
    out = []
    for raw in names.split(","):
        name = raw.strip()
        if name:
            out.append(_SHORT.get(name.lower(), name))
    return out


def _nvidia_visible() -> bool:
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"))


class OnnxSession:
    """One model: ``execute(input_ids, attention_mask) -> embeddings [batch, dimensions] float32``."""

    def __init__(self, model_dir: str | os.PathLike[str], *, providers: str = "",
                 intra_op_threads: int = 0, max_batch_items: int = 256,
                 dimensions: int = EMBEDDING_DIM, max_tokens: int = MAX_TOKENS) -> None:
        self.model_path = Path(model_dir) / MODEL_FILE
        self.dimensions = dimensions
        self.max_tokens = max_tokens
        self._requested = _resolve(providers)
        self._intra_op_threads = intra_op_threads
        self._max_batch_items = max_batch_items
        self._session: Any = None
        self._lanes: list[Any] = []
        self._lock = threading.Lock()
        self.provider: str | None = None
        self.tried: dict[str, str] = {}  # provider → why it was not kept
        self.reference_cosine: float | None = None

    @property
    def ready(self) -> bool:
        return self._session is not None

    def candidates(self) -> list[str]:
        """Wanted providers that this ONNX Runtime build has (GPU ones only with a GPU)."""
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        wanted = self._requested or list(PREFERENCE)
        out = []
        for p in wanted:
            if p not in available:
                continue
            if not self._requested and p != "CPUExecutionProvider" and not _nvidia_visible():
                self.tried[p] = "no NVIDIA device visible"
                continue
            out.append(p)
        return out

    def _provider_options(self, provider: str) -> dict[str, Any]:
        if provider == "TensorrtExecutionProvider":
            cache = os.environ.get("MAAS_TRT_CACHE_DIR") or str(self.model_path.parent / "trt")
            n = self._max_batch_items
            return {
                "trt_fp16_enable": os.environ.get("MAAS_TRT_FP16", "1") == "1",
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": cache,
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": cache,
                "trt_profile_min_shapes": "input_ids:1x1,attention_mask:1x1",
                "trt_profile_opt_shapes": "input_ids:32x64,attention_mask:32x64",
                "trt_profile_max_shapes":
                    f"input_ids:{n}x{self.max_tokens},attention_mask:{n}x{self.max_tokens}",
            }
        if provider == "CUDAExecutionProvider":
            return {"device_id": int(os.environ.get("MAAS_CUDA_DEVICE", "0")),
                    "arena_extend_strategy": "kSameAsRequested",
                    "cudnn_conv_algo_search": "HEURISTIC"}
        return {}

    def _build(self, provider: str, intra_op_threads: int | None = None) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        threads = self._intra_op_threads if intra_op_threads is None else intra_op_threads
        if threads:
            opts.intra_op_num_threads = threads
        # Idle ORT threads spin by default, taking the cores the event loop needs between
        # model calls; a server that also parses, tokenizes and serialises turns that off.
        spin = os.environ.get("MAAS_ORT_SPIN", "0")
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        chain: list[Any] = [(provider, self._provider_options(provider))]
        if provider != "CPUExecutionProvider":
            chain.append("CPUExecutionProvider")
        return ort.InferenceSession(str(self.model_path), opts, providers=chain)

    def _warm_up(self, session: Any) -> None:
        lengths = (3, 17, 64, self.max_tokens)
        ids = np.zeros((len(lengths), self.max_tokens), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, n in enumerate(lengths):
            ids[row, 0], ids[row, 1 : n - 1], ids[row, n - 1] = 101, 1000 + row, 102
            mask[row, :n] = 1
        for width in (self.max_tokens, 16):  # a long and a short shape
            n_rows = sum(1 for n in lengths if n <= width)
            (out,) = session.run(["embeddings"], {"input_ids": ids[:n_rows, :width],
                                                  "attention_mask": mask[:n_rows, :width]})
            if out.shape != (n_rows, self.dimensions) or not np.isfinite(out).all():
                raise RuntimeError(f"warm-up returned shape {out.shape} or non-finite values")
            norms = np.linalg.norm(out, axis=1)
            if not np.allclose(norms, 1.0, atol=1e-3):
                raise RuntimeError(f"warm-up vectors are not normalised: {norms}")

    def _check_reference(self, session: Any) -> float | None:
        """Min cosine against the export's reference vectors; raises below the threshold."""
        path = self.model_path.parent / REFERENCE_FILE
        if not path.is_file():
            return None
        with np.load(path) as ref:
            (out,) = session.run(["embeddings"], {"input_ids": ref["input_ids"],
                                                  "attention_mask": ref["attention_mask"]})
            expected = ref["embeddings"].astype(np.float64)
        got = out.astype(np.float64)
        cos = (got * expected).sum(1) / (np.linalg.norm(got, axis=1)
                                         * np.linalg.norm(expected, axis=1))
        threshold = float(os.environ.get("MAAS_MIN_COSINE", MIN_COSINE))
        worst = float(cos.min())
        if not worst >= threshold:
            raise RuntimeError(f"min cosine {worst:.6f} against the reference is below "
                               f"{threshold}")
        return worst

    def initialize(self) -> str:
        """Load the model on the best provider that passes a warm-up run; returns its name."""
        if not self.model_path.is_file():
            raise FileNotFoundError(
                f"{self.model_path} not found; run `python -m inference_image.export`")
        for provider in self.candidates():
            try:
                session = self._build(provider)
                actual = session.get_providers()[0]
                if actual != provider:
                    raise RuntimeError(f"ONNX Runtime fell back to {actual}")
                self._warm_up(session)
                self.reference_cosine = self._check_reference(session)
            except Exception as exc:  # noqa: BLE001 - any failure means: try the next provider
                self.tried[provider] = f"{type(exc).__name__}: {exc}"
                log.warning("provider %s not usable: %s", provider, exc)
                continue
            self._session, self.provider = session, provider
            log.info("model %s loaded on %s (min cosine vs reference %s)", self.model_path,
                     provider, self.reference_cosine)
            return provider
        raise RuntimeError(f"no usable execution provider: {self.tried or 'none available'}")

    def open_lane(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """A second session on the provider ``initialize`` chose (its own CUDA stream on a
        GPU, its own threads on a CPU), warmed up; returns its execute function."""
        if self.provider is None:
            raise RuntimeError("session is not initialized")
        session = self._build(self.provider)
        self._warm_up(session)
        self._lanes.append(session)

        def execute(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
            (out,) = session.run(["embeddings"], {"input_ids": input_ids,
                                                  "attention_mask": attention_mask})
            return out

        return execute

    def execute(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        session = self._session
        if session is None:
            raise RuntimeError("session is not initialized")
        (out,) = session.run(["embeddings"], {"input_ids": input_ids,
                                              "attention_mask": attention_mask})
        return out

    def finalize(self) -> None:
        with self._lock:
            self._session = None
            self._lanes.clear()
