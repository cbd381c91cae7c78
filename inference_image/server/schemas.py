"""Transport: request parsing and validation, response bodies. Pure functions, no I/O.

Every failure is an ``InvalidRequestError`` (400) naming the offending ``param``.
"""

from __future__ import annotations

import base64
import sys
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate, chain
from typing import Any

import numpy as np
import orjson

from gateway import wire
from inference_image import EMBEDDING_DIM, MODEL_NAME
from inference_image.server.batcher import TokenBatch
from inference_image.server.errors import InvalidRequestError

_LITTLE = sys.byteorder == "little"


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidRequestError("request body is empty; expected a JSON object")
    try:
        data = orjson.loads(body)  # rejects invalid UTF-8, lone surrogates, NaN, deep nesting
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    return data


def _check_batch(tokens: np.ndarray, lengths: list[int], *, param: str, vocab_size: int,
                 max_tokens: int | None) -> TokenBatch:
    """Lengths in [1, max_tokens] and ids in [0, vocab_size), naming the first offender."""
    if min(lengths) < 1:
        n = next(n for n, length in enumerate(lengths) if length < 1)
        raise InvalidRequestError(f"'{param}[{n}]' must be a non-empty list of token ids",
                                  param=f"{param}[{n}]")
    if max_tokens is not None and max(lengths) > max_tokens:
        n = next(n for n, length in enumerate(lengths) if length > max_tokens)
        raise InvalidRequestError(
            f"'{param}[{n}]' has {lengths[n]} tokens; the model's limit is {max_tokens}",
            param=f"{param}[{n}]", code="context_length_exceeded")
    offsets = list(accumulate(lengths, initial=0))
    # numpy's reductions cost microseconds each; a short request is checked in Python
    small = tokens.tolist() if len(tokens) <= 64 else None
    lo, hi = (min(small), max(small)) if small is not None else (tokens.min(), tokens.max())
    if lo < 0 or hi >= vocab_size:
        flat = int(np.argmax((tokens < 0) | (tokens >= vocab_size)))
        n = bisect_right(offsets, flat) - 1
        where = f"{param}[{n}][{flat - offsets[n]}]"
        raise InvalidRequestError(
            f"'{where}' = {int(tokens[flat])} is outside the vocabulary [0, {vocab_size})",
            param=where)
    return TokenBatch(tokens, lengths, offsets)


def check_token_ids(items: Any, *, param: str, vocab_size: int, max_items: int,
                    max_tokens: int | None) -> TokenBatch:
    """A non-empty list (<= max_items) of non-empty lists of ints in [0, vocab_size)."""
    if not isinstance(items, list) or not items:
        raise InvalidRequestError(f"'{param}' must be a non-empty list of lists of token ids",
                                  param=param)
    if len(items) > max_items:
        raise InvalidRequestError(
            f"'{param}' has {len(items)} items; at most {max_items} are allowed", param=param)
    if not all(type(item) is list for item in items):
        n = next(n for n, item in enumerate(items) if type(item) is not list)
        raise InvalidRequestError(f"'{param}[{n}]' must be a non-empty list of token ids",
                                  param=f"{param}[{n}]")
    flat = list(chain.from_iterable(items))
    if flat and set(map(type, flat)) != {int}:  # bool is not int here: True is no token id
        n, k = next((n, k) for n, item in enumerate(items) for k, v in enumerate(item)
                    if type(v) is not int)
        raise InvalidRequestError(f"'{param}[{n}][{k}]' must be an integer token id",
                                  param=f"{param}[{n}][{k}]")
    lengths = list(map(len, items))
    try:
        tokens = np.array(flat, dtype=np.int64)
    except OverflowError:
        tokens = np.array([v if -1 <= v <= vocab_size else -1 for v in flat], dtype=np.int64)
    if not flat:
        tokens = np.zeros(0, dtype=np.int64)
    return _check_batch(tokens, lengths, param=param, vocab_size=vocab_size,
                        max_tokens=max_tokens)


def parse_invocations(data: dict[str, Any], *, vocab_size: int, max_items: int,
                      max_tokens: int) -> TokenBatch:
    if "input_ids" not in data:
        raise InvalidRequestError("'input_ids' is required", param="input_ids")
    return check_token_ids(data["input_ids"], param="input_ids", vocab_size=vocab_size,
                           max_items=max_items, max_tokens=max_tokens)


def parse_token_ids(body: bytes, *, vocab_size: int, max_items: int,
                    max_tokens: int) -> TokenBatch:
    """The binary request (``gateway.wire``): header, lengths, int32 ids."""
    head = wire.TOKEN_IDS_HEADER
    if len(body) < head.size:
        raise InvalidRequestError(f"a {wire.TOKEN_IDS_TYPE} body starts with a "
                                  f"{head.size}-byte header")
    magic, count = head.unpack_from(body)
    if magic != wire.TOKEN_IDS_MAGIC:
        raise InvalidRequestError(f"a {wire.TOKEN_IDS_TYPE} body starts with "
                                  f"{wire.TOKEN_IDS_MAGIC!r}, not {magic!r}")
    if not 1 <= count <= max_items:
        raise InvalidRequestError(f"'input_ids' has {count} items; 1 to {max_items} are "
                                  "allowed", param="input_ids")
    start = head.size + 4 * count
    if len(body) < start:
        raise InvalidRequestError(f"body of {len(body)} bytes is too short for {count} lengths")
    lengths = array("I")
    lengths.frombytes(body[head.size:start])
    if not _LITTLE:  # pragma: no cover - the wire is little-endian
        lengths.byteswap()
    total = sum(lengths)
    if len(body) != start + 4 * total:
        raise InvalidRequestError(f"body has {len(body)} bytes; {count} items of {total} "
                                  f"token ids need {start + 4 * total}")
    tokens = np.frombuffer(body, dtype="<i4", count=total, offset=start)
    return _check_batch(tokens, lengths.tolist(), param="input_ids", vocab_size=vocab_size,
                        max_tokens=max_tokens)


@dataclass(frozen=True)
class EmbeddingsRequest:
    texts: list[str] | None  # to tokenize here
    ids: TokenBatch | None  # already token ids
    truncate: bool
    encoding_format: str


def parse_embeddings(data: dict[str, Any], *, vocab_size: int, max_items: int,
                     dimensions: int = EMBEDDING_DIM) -> EmbeddingsRequest:
    """The body of a request for one model (the app picked it by ``model``)."""
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
    if dims is not None and (type(dims) is not int or dims != dimensions):
        raise InvalidRequestError(f"'dimensions' must be {dimensions} for this model",
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


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def invocations_body(emb: np.ndarray, prompt_tokens: int) -> bytes:
    return dumps({"embeddings": np.ascontiguousarray(emb, dtype=np.float32),
                  "prompt_tokens": prompt_tokens})


def embeddings_body(emb: np.ndarray, prompt_tokens: int, encoding_format: str,
                    model: str = MODEL_NAME) -> bytes:
    if encoding_format == "base64":
        vectors: list[Any] = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
                              for row in emb]
    else:
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        vectors = list(emb)  # rows, serialised as arrays
    return dumps({
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": v}
                 for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
