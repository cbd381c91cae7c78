"""The baseline: a plain per-request sentence-transformers HTTP server (no batching).

    python -m inference_image.bench.peer   # PORT (default 8090), HOST (127.0.0.1)

What a first version usually is: a synchronous handler (Starlette's thread pool) calling
``SentenceTransformer.encode`` on each request's texts, same /v1/embeddings shape.
"""

from __future__ import annotations

import json
import os
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def build() -> Starlette:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from inference_image.export import source_dir

    model = SentenceTransformer(str(source_dir()), device="cpu")
    model.encode(["warm up"])

    async def embeddings(request: Request) -> Response:
        data = json.loads(await request.body())
        texts = data["input"] if isinstance(data["input"], list) else [data["input"]]
        from starlette.concurrency import run_in_threadpool

        emb = await run_in_threadpool(model.encode, texts, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        body = {"object": "list", "model": "all-MiniLM-L6-v2",
                "data": [{"object": "embedding", "index": i, "embedding": v}
                         for i, v in enumerate(emb.tolist())]}
        return Response(json.dumps(body), media_type="application/json")

    async def ping(request: Request) -> Response:
        return Response("{}", media_type="application/json")

    return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"]),
                             Route("/ping", ping)])


def main() -> int:
    uvicorn.run(build(), host=os.environ.get("HOST", "127.0.0.1"),
                port=int(os.environ.get("PORT", "8090")), log_level="warning",
                access_log=False, backlog=2048)
    return 0


if __name__ == "__main__":
    sys.exit(main())
