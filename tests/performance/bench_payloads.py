"""The largest request that works end to end (`python -m tests.performance.bench_payloads`): the
local stack (API Gateway emulator, which answers 502 to a Lambda result over 6 MB as AWS does;
the invoke handler; the inference server on the CPU) started on free ports; a few minutes.

For float and base64 output: the largest number of inputs the gateway takes (its up-front
limit), that request sent through the API (status, answer bytes, the Lambda result's bytes,
seconds), the next count refused with 400; and the container hop of the same request
(``/invocations`` with the same token ids) measured against SageMaker's 6 MB payload limit.
Inputs are short sentences (7-24 tokens). Timings are noisy on a shared machine: the load
average is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import urllib3

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.domain.payloads import LAMBDA_RESPONSE_LIMIT_BYTES, max_inputs  # noqa: E402
from infra.local.services import free_port  # noqa: E402
from infra.local.stack import LocalStack, StackConfig  # noqa: E402

SAGEMAKER_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega").split()


def sentences(n: int) -> list[str]:
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(5 + i % 15)) for i in range(n)]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def call(api: urllib3.PoolManager, url: str, key: str, n: int, encoding_format: str) -> dict[str, Any]:
    body = json.dumps({"model": "all-MiniLM-L6-v2", "input": sentences(n), "encoding_format": encoding_format})
    started = time.perf_counter()
    response = api.request("POST", f"{url}/v1/embeddings", body=body, timeout=120,
                           headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    seconds = time.perf_counter() - started
    out: dict[str, Any] = {"inputs": n, "status": response.status, "answer_bytes": len(response.data),
                           "seconds": round(seconds, 2)}
    if response.status == 200:
        # the Lambda result: the answer as one JSON string (its quotes escaped) in the proxy result
        headers = {k: v for k, v in response.headers.items()}
        result = {"statusCode": 200, "headers": headers, "body": response.data.decode(), "isBase64Encoded": False}
        out["lambda_result_bytes"] = len(json.dumps(result).encode())
        out["vectors"] = len(json.loads(response.data)["data"])
    else:
        out["error"] = json.loads(response.data)["error"]
    return out


def hop(api: urllib3.PoolManager, inference_url: str, n: int) -> dict[str, Any]:
    """The container's answer to the same request, as the gateway asks for it (the binary hop:
    token ids out, float32 vectors back)."""
    from gateway import wire
    from gateway.adapters.tokenizer import ModelTokenizer
    from gateway.domain.registry import MINILM

    ids = ModelTokenizer(MINILM).encode_texts(sentences(n), truncate=False)
    body = wire.encode_token_ids(ids)
    response = api.request("POST", f"{inference_url}/invocations", body=body, timeout=120,
                           headers={"Content-Type": wire.TOKEN_IDS_TYPE, "Accept": wire.EMBEDDINGS_TYPE,
                                    wire.ATTRIBUTES_HEADER: wire.format_attributes("bench", 110_000)})
    return {"inputs": n, "status": response.status, "hop_answer_bytes": len(response.data),
            "hop_request_bytes": len(body), "fits_sagemaker": len(response.data) <= SAGEMAKER_PAYLOAD_LIMIT_BYTES,
            "content_type": response.headers.get("Content-Type")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"load_before": load()}
    with tempfile.TemporaryDirectory() as state:
        config = StackConfig(api_port=free_port(), inference_port=free_port(), redis_port=free_port(),
                             dynamodb_port=free_port(), files_port=free_port(), state_dir=Path(state), api_workers=1,
                             # the pro plan's largest request, as a GPU endpoint takes it
                             max_request_tokens=524_288)
        stack = LocalStack(config).start(progress=lambda line: print(f"[bench] {line}", flush=True))
        try:
            api = urllib3.PoolManager()
            admin = {"Authorization": f"Bearer {stack.admin_key}", "Content-Type": "application/json"}
            tenant = json.loads(api.request("POST", f"{stack.api_url}/billing/tenants", headers=admin,
                                            body=json.dumps({"name": "big", "plan": "pro"})).data)
            key = json.loads(api.request("POST", f"{stack.api_url}/billing/tenants/{tenant['id']}/keys",
                                         headers=admin, body="{}").data)["key"]
            inference_url = f"http://127.0.0.1:{config.inference_port}"
            for encoding_format in ("float", "base64"):
                largest = min(max_inputs(384, encoding_format), 2048)
                print(f"[bench] {encoding_format}: {largest} inputs, then {largest + 1}", flush=True)
                report[encoding_format] = {
                    "largest": call(api, stack.api_url, key, largest, encoding_format),
                    "one_more": call(api, stack.api_url, key, largest + 1, encoding_format),
                    "hop": hop(api, inference_url, largest),
                }
        finally:
            stack.stop()
    report["load_after"] = load()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"largest request end to end (load {report['load_before']} -> {report['load_after']}); "
          f"Lambda's limit {LAMBDA_RESPONSE_LIMIT_BYTES:,} bytes, SageMaker's {SAGEMAKER_PAYLOAD_LIMIT_BYTES:,}:")
    for encoding_format in ("float", "base64"):
        r = report[encoding_format]
        big, more, h = r["largest"], r["one_more"], r["hop"]
        print(f"  {encoding_format:6s} {big['inputs']} inputs: {big['status']}, answer {big['answer_bytes']:,} bytes, "
              f"Lambda result {big.get('lambda_result_bytes', 0):,} bytes, {big['seconds']} s; "
              f"{more['inputs']} inputs: {more['status']} {more.get('error', {}).get('code', '')}")
        print(f"         the container hop for {h['inputs']} inputs ({h['content_type']}): "
              f"{h['hop_request_bytes']:,} bytes out, {h['hop_answer_bytes']:,} bytes "
              f"({'fits' if h['fits_sagemaker'] else 'does not fit'} SageMaker's 6 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
