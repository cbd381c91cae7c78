"""The hop format: sizes and CPU time of each side for the gateway's largest request.

    python -m inference_image.bench hop

2,048 inputs of 71 tokens, 2,048 vectors of 384 float32: bytes on the wire, the gateway's
encode/parse (``gateway.adapters.inference``) and the container's parse/answer
(``inference_image.server.schemas``), binary against JSON; best of 5.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import numpy as np
import orjson

from gateway import wire
from inference_image import EMBEDDING_DIM
from inference_image.server import schemas

ITEMS, TOKENS = 2048, 71


def _best_ms(fn: Callable[[], object], n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000


def main(argv: list[str] | None = None) -> int:
    from gateway.adapters.inference import parse_answer

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((ITEMS, EMBEDDING_DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [[101] + [2000 + (i + k) % 900 for k in range(TOKENS - 2)] + [102]
           for i in range(ITEMS)]
    tokens = ITEMS * TOKENS
    answer_json = schemas.invocations_body(emb, tokens)
    answer_bin = wire.embeddings_header(ITEMS, EMBEDDING_DIM, tokens) + emb.tobytes()
    request_json = orjson.dumps({"input_ids": ids})
    request_bin = wire.encode_token_ids(ids)
    check = {"vocab_size": 30522, "max_items": ITEMS, "max_tokens": 256}
    result = parse_answer(ids, answer_bin, wire.EMBEDDINGS_TYPE)
    rows = [
        ("answer bytes", len(answer_bin), len(answer_json)),
        ("request bytes", len(request_bin), len(request_json)),
        ("gateway: encode the request, ms", _best_ms(lambda: wire.encode_token_ids(ids)),
         _best_ms(lambda: orjson.dumps({"input_ids": ids}))),
        ("container: parse the request, ms",
         _best_ms(lambda: schemas.parse_token_ids(request_bin, **check)),
         _best_ms(lambda: schemas.parse_invocations(schemas.parse_json_object(request_json),
                                                    **check))),
        ("container: answer body, ms (binary: written in place; this is a copy)",
         _best_ms(lambda: wire.embeddings_header(ITEMS, EMBEDDING_DIM, 1) + emb.tobytes()),
         _best_ms(lambda: schemas.invocations_body(emb, tokens))),
        ("gateway: read the answer, ms",
         _best_ms(lambda: parse_answer(ids, answer_bin, wire.EMBEDDINGS_TYPE)),
         _best_ms(lambda: parse_answer(ids, answer_json, "application/json"))),
        ("gateway: 2,048 vectors, ms: raw(i) bytes | vector(i) float lists",
         _best_ms(lambda: [result.raw(i) for i in range(ITEMS)]),
         _best_ms(lambda: [result.vector(i) for i in range(ITEMS)])),
    ]
    print(f"[hop] {ITEMS} x {TOKENS} tokens, {ITEMS} x {EMBEDDING_DIM} float32; load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"[hop] {'':<70} {'binary':>12} {'JSON':>12}")
    for name, a, b in rows:
        print(f"[hop] {name:<70} {a:>12,.2f} {b:>12,.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
