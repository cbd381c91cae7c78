"""Transport: request parsing and validation, response bodies. Pure functions, no I/O.

Every failure is an ``InvalidRequestError`` (400) naming the offending ``param``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference_image import MODEL_ALIASES, MODEL_NAME
from inference_image.server.errors import InvalidRequestError, ModelNotFoundError


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidRequestError("request body is empty; expected a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequestError("request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    return data


def check_token_ids(items: Any, *, param: str, vocab_size: int, max_items: int,
                    max_tokens: int | None) -> list[list[int]]:
    """A non-empty list (<= max_items) of non-empty lists of ints in [0, vocab_size)."""
    if not isinstance(items, list) or not items:
        raise InvalidRequestError(f"'{param}' must be a non-empty list of lists of token ids",
                                  param=param)
    if len(items) > max_items:
        raise InvalidRequestError(
            f"'{param}' has {len(items)} items; at most {max_items} are allowed", param=param)
    for n, item in enumerate(items):
        where = f"{param}[{n}]"
        if not isinstance(item, list) or not item:
            raise InvalidRequestError(f"'{where}' must be a non-empty list of token ids",
                                      param=where)
        if max_tokens is not None and len(item) > max_tokens:
            raise InvalidRequestError(
                f"'{where}' has {len(item)} tokens; the model's limit is {max_tokens}",
                param=where, code="context_length_exceeded")
        if not all(type(v) is int for v in item):
            bad = next(k for k, v in enumerate(item) if type(v) is not int)
            raise InvalidRequestError(f"'{where}[{bad}]' must be an integer token id",
                                      param=f"{where}[{bad}]")
        if min(item) < 0 or max(item) >= vocab_size:
            bad = next(k for k, v in enumerate(item) if not 0 <= v < vocab_size)
            raise InvalidRequestError(
                f"'{where}[{bad}]' = {item[bad]} is outside the vocabulary [0, {vocab_size})",
                param=f"{where}[{bad}]")
    return items


def parse_invocations(data: dict[str, Any], *, vocab_size: int, max_items: int,
                      max_tokens: int) -> list[list[int]]:
    if "input_ids" not in data:
        raise InvalidRequestError("'input_ids' is required", param="input_ids")
    return check_token_ids(data["input_ids"], param="input_ids", vocab_size=vocab_size,
                           max_items=max_items, max_tokens=max_tokens)


@dataclass(frozen=True)
class EmbeddingsRequest:
    texts: list[str] | None  # to tokenize here
    ids: list[list[int]] | None  # already token ids
    truncate: bool
    encoding_format: str


def parse_embeddings(data: dict[str, Any], *, vocab_size: int,
                     max_items: int) -> EmbeddingsRequest:
    model = data.get("model")
    if model is not None:
        if not isinstance(model, str):
            raise InvalidRequestError("'model' must be a string", param="model")
        if model not in MODEL_ALIASES:
            raise ModelNotFoundError(f"the model '{model}' does not exist; this server "
                                     f"serves '{MODEL_NAME}'", param="model")
    fmt = data.get("encoding_format", "float")
    if fmt is None:
        fmt = "float"
    if fmt not in ("float", "base64"):
        raise InvalidRequestError("'encoding_format' must be 'float' or 'base64'",
                                  param="encoding_format")
    truncate = data.get("truncate", False)
    if truncate is None:
        truncate = False
    if not isinstance(truncate, bool):
        raise InvalidRequestError("'truncate' must be a boolean", param="truncate")
    dims = data.get("dimensions")
    if dims is not None and (type(dims) is not int or dims != 384):
        raise InvalidRequestError("'dimensions' must be 384 for this model",
                                  param="dimensions")
    if "input" not in data:
        raise InvalidRequestError("'input' is required", param="input")
    raw = data["input"]
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise InvalidRequestError(
            "'input' must be a string, a non-empty list of strings, a list of token ids or "
            "a list of lists of token ids", param="input")
    if all(isinstance(x, str) for x in raw):
        if len(raw) > max_items:
            raise InvalidRequestError(
                f"'input' has {len(raw)} items; at most {max_items} are allowed", param="input")
        for n, text in enumerate(raw):
            if not text:
                raise InvalidRequestError(f"'input[{n}]' is an empty string",
                                          param=f"input[{n}]")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate escaped in the JSON ("\ud800")
                raise InvalidRequestError(f"'input[{n}]' is not valid Unicode text",
                                          param=f"input[{n}]") from None
        return EmbeddingsRequest(raw, None, truncate, fmt)
    if all(type(x) is int for x in raw):
        raw = [raw]
    if all(isinstance(x, list) for x in raw):
        ids = check_token_ids(raw, param="input", vocab_size=vocab_size, max_items=max_items,
                              max_tokens=None)
        return EmbeddingsRequest(None, ids, truncate, fmt)
    raise InvalidRequestError(
        "'input' must be a string, a list of strings, a list of token ids or a list of lists "
        "of token ids (not a mix)", param="input")


try:  # 20x faster than json for float vectors, and writes float32's shortest repr
    import orjson
except ImportError:  # pragma: no cover - orjson is in the serve extra
    orjson = None


def dumps(obj: Any) -> bytes:
    if orjson is not None:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                      default=lambda o: o.tolist()).encode()


def invocations_body(emb: np.ndarray, prompt_tokens: int) -> bytes:
    return dumps({"embeddings": np.ascontiguousarray(emb, dtype=np.float32),
                  "prompt_tokens": prompt_tokens})


def embeddings_body(emb: np.ndarray, prompt_tokens: int, encoding_format: str) -> bytes:
    if encoding_format == "base64":
        vectors: list[Any] = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
                              for row in emb]
    else:
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        vectors = list(emb)  # rows, serialised as arrays
    return dumps({
        "object": "list",
        "model": MODEL_NAME,
        "data": [{"object": "embedding", "index": i, "embedding": v}
                 for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
