"""The exported model: its report, its graph, the validation gate, idempotence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from inference_image import EMBEDDING_DIM, MAX_TOKENS
from inference_image import export as export_mod
from inference_image.validation import validation_texts

REPO = Path(__file__).resolve().parents[2]


def test_report_describes_the_model_on_disk(model_dir: Path) -> None:
    report = json.loads((model_dir / "export_report.json").read_text())
    assert report["min_cosine"] >= 0.9999
    assert report["n_texts"] >= 50
    assert report["token_lengths"]["at_limit"] >= 3
    assert report["model_sha256"] == export_mod.sha256_file(model_dir / "model.onnx")
    assert report["reference_sha256"] == export_mod.sha256_file(model_dir / "reference.npz")
    import onnxruntime

    assert report["onnxruntime_version"] == onnxruntime.__version__
    assert export_mod.is_up_to_date(model_dir, export_mod.source_dir())


def test_graph_has_dynamic_int64_inputs_and_pooled_output(model_dir: Path) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    assert set(inputs) == {"input_ids", "attention_mask"}
    for i in inputs.values():
        assert i.type == "tensor(int64)"
        assert all(isinstance(d, str) for d in i.shape)  # both axes dynamic
    (out,) = sess.get_outputs()
    assert out.name == "embeddings" and out.type == "tensor(float)"
    assert out.shape[1] == EMBEDDING_DIM


def test_tokenizer_next_to_the_model_does_not_pad(model_dir: Path) -> None:
    data = json.loads((model_dir / "tokenizer.json").read_text())
    assert data["padding"] is None and data["truncation"] is None


def test_validation_texts_are_varied_and_deterministic(tokenizer) -> None:
    count = lambda t: len(tokenizer.encode(t).ids)  # noqa: E731
    texts = validation_texts(count)
    assert texts == validation_texts(count)
    assert len(texts) >= 50
    lengths = [count(t) for t in texts]
    assert lengths.count(MAX_TOKENS) >= 3
    assert {MAX_TOKENS - 1, MAX_TOKENS + 1} <= set(lengths)
    joined = "".join(texts)
    for sample in ("東京", "🍕", "שלום", "مرحبا", "é", "def ", "1,000,000"):
        assert sample in joined


def test_second_run_skips_quickly(model_dir: Path) -> None:
    # quickly: it rewrites nothing and never loads torch (what makes an export take minutes)
    before = {f.name: f.stat().st_mtime_ns for f in model_dir.iterdir()}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "inference_image.export", "--out",
                           str(model_dir)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout
    assert {f.name: f.stat().st_mtime_ns for f in model_dir.iterdir()} == before
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "sentence_transformers" not in imported


@pytest.mark.slow
def test_refuses_a_model_below_the_threshold(tmp_path: Path, monkeypatch) -> None:
    # GIVEN a threshold no float32 model can meet
    monkeypatch.setattr(export_mod, "MIN_COSINE", 1.0 + 1e-9)
    # WHEN exporting
    rc = export_mod.main(["--out", str(tmp_path)])
    # THEN it exits non-zero and writes nothing
    assert rc == 2
    assert not (tmp_path / "model.onnx").exists()
    assert not (tmp_path / "export_report.json").exists()
    assert not (tmp_path / "reference.npz").exists()
