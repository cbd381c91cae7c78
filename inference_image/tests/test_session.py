"""Compute: provider choice by a real warm-up and the reference check."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from inference_image.server.session import OnnxSession


def test_cpu_session_matches_the_reference(model_dir: Path) -> None:
    session = OnnxSession(model_dir)
    assert session.initialize() == "CPUExecutionProvider"
    assert session.reference_cosine is not None and session.reference_cosine >= 0.9999
    ids = np.array([[101, 7592, 102]], dtype=np.int64)
    out = session.execute(ids, np.ones_like(ids))
    assert out.shape == (1, 384) and out.dtype == np.float32
    session.finalize()
    assert not session.ready


def test_a_provider_that_drifts_from_the_reference_is_refused(model_dir: Path,
                                                              tmp_path: Path) -> None:
    # GIVEN the real model with a reference whose vectors no provider reproduces
    (tmp_path / "model.onnx").symlink_to(model_dir / "model.onnx")
    shutil.copy(model_dir / "tokenizer.json", tmp_path)
    with np.load(model_dir / "reference.npz") as ref:
        data = {k: ref[k] for k in ref.files}
    data["embeddings"] = np.roll(data["embeddings"], 1, axis=1)
    np.savez(tmp_path / "reference.npz", **data)
    # WHEN the session starts, THEN no provider is kept, and it says why
    session = OnnxSession(tmp_path)
    with pytest.raises(RuntimeError, match="no usable execution provider"):
        session.initialize()
    assert "below" in session.tried["CPUExecutionProvider"]


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="inference_image.export"):
        OnnxSession(tmp_path).initialize()
