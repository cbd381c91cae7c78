"""Benchmarks (not tests): ``python -m inference_image.bench {cpu,null,serving,offline,gpu,largest}``.

- cpu: this CPU's SIMD flags, an FP32 peak estimate, a measured matmul rate, the model's FLOPs.
- null: the serving path alone (the real server with a null model): CPU time per request.
- serving: this server vs Infinity (or a per-request sentence-transformers server) on the same
  model files, same load generator, c = 1, 32, 128; throughput and p50/p99.
- offline: tokens/s of the exported ONNX model vs ``SentenceTransformer.encode`` on the same
  texts, with the cosine between them (and the int8 dynamic-quantised variant).
- gpu: one script for a GPU machine: provider actually kept, fp16/fp32 cosine, tokens/s at 1,
  32 and 2,048 inputs per request, sentence-transformers fp16 ratio, the server under load;
  exits 0 with a message where there is no GPU (``--on-cpu`` checks it on the CPU).
- largest: the largest request that completes well inside the 20 s deadline under load.
"""
