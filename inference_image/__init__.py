"""The inference container: export (torch → ONNX, validated), server (SageMaker contract +
OpenAI embeddings), its own tests and benchmarks.

Serving imports only numpy, onnxruntime, tokenizers, httptools, uvloop, orjson and
prometheus_client; torch and sentence-transformers are needed by ``inference_image.export``
and the benchmarks.
"""

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_ALIASES = frozenset({MODEL_NAME, "sentence-transformers/all-MiniLM-L6-v2"})
EMBEDDING_DIM = 384
MAX_TOKENS = 256  # sentence_bert_config.json max_seq_length
DEFAULT_MODEL_DIR = ".maas/model"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
REPORT_FILE = "export_report.json"
REFERENCE_FILE = "reference.npz"  # sentence-transformers vectors every provider must match
MIN_COSINE = 0.9999


def default_model_dir() -> str:
    import os

    return os.environ.get("MAAS_MODEL_DIR") or DEFAULT_MODEL_DIR
