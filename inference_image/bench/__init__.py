"""Benchmarks (not tests): ``python -m inference_image.bench {serving,offline,gpu,cpu}``.

- serving: this server vs a plain per-request sentence-transformers HTTP server (``peer``)
  at several concurrencies, single-sentence requests; throughput and p50/p99.
- offline: tokens/s of the exported ONNX model vs ``SentenceTransformer.encode`` on the same
  texts, with the cosine between them (and the int8 dynamic-quantised variant).
- gpu: ONNX Runtime CUDA fp32/fp16 and TensorRT vs sentence-transformers fp16, plus a matmul
  ceiling; exits 0 with a message where there is no GPU.
- cpu: this CPU's SIMD flags, an FP32 peak estimate and a measured matmul rate.
"""
