"""The hop between the gateway and the container: binary bodies and request metadata.

Its one home, shipped by both artifacts: the Lambda layer (the whole gateway package) and the
inference image (which copies this module and gateway/__init__.py alone). So it imports only
the standard library, never the rest of the gateway (an import-linter contract keeps it so);
the server reads the same layouts with numpy. Everything is little-endian.

Embeddings (the answer, ``Content-Type: application/vnd.maas.embeddings``)::

    b"MAE1" | count u32 | dim u32 | prompt_tokens u32 | count*dim float32

Token ids (the request, ``Content-Type: application/vnd.maas.token-ids``)::

    b"MAT1" | count u32 | count lengths u32 | sum(lengths) token ids i32

SageMaker's ``invoke_endpoint`` returns only a body and its content type, so everything the
caller needs (count, dim, prompt_tokens) is in the body. 2,048 vectors of 384 floats are
3.1 MB here against ~9.7 MB of JSON (SageMaker and Lambda stop at 6 MB).

Request metadata travels in the one channel SageMaker forwards,
``CustomAttributes`` → ``X-Amzn-SageMaker-Custom-Attributes`` (<= 1024 visible ASCII
characters): ``tenant=<percent-encoded id>;timeout_ms=<remaining milliseconds>;model=<id>``.
The timeout is relative (the gateway's remaining budget when it sends), so no clock is shared.
``priority=batch`` marks a Batch API line (served after every online request waiting).
``model`` names the catalogued model (gateway/assets/models.json) the ids were tokenized for:
one container serves several, each with its own session and batcher; a hop without it gets
the container's first (default) model.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence
from urllib.parse import quote, unquote

EMBEDDINGS_TYPE = "application/vnd.maas.embeddings"
TOKEN_IDS_TYPE = "application/vnd.maas.token-ids"
JSON_TYPE = "application/json"

EMBEDDINGS_MAGIC = b"MAE1"
TOKEN_IDS_MAGIC = b"MAT1"
EMBEDDINGS_HEADER = struct.Struct("<4sIII")  # magic, count, dim, prompt_tokens
TOKEN_IDS_HEADER = struct.Struct("<4sI")  # magic, count

ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
MAX_ATTRIBUTES_CHARS = 1024
_LITTLE = sys.byteorder == "little"


class WireError(ValueError):
    """A body that does not follow its layout."""


# -- embeddings (container → gateway) -------------------------------------------------------
def embeddings_header(count: int, dim: int, prompt_tokens: int) -> bytes:
    return EMBEDDINGS_HEADER.pack(EMBEDDINGS_MAGIC, count, dim, prompt_tokens)


def read_embeddings(body: bytes) -> tuple[int, int, int, memoryview]:
    """(count, dim, prompt_tokens, the float32 data) of an embeddings body; WireError when its
    magic or length is wrong."""
    if len(body) < EMBEDDINGS_HEADER.size:
        raise WireError(f"embeddings body of {len(body)} bytes is shorter than its header")
    magic, count, dim, prompt_tokens = EMBEDDINGS_HEADER.unpack_from(body)
    if magic != EMBEDDINGS_MAGIC:
        raise WireError(f"embeddings body starts with {magic!r}, not {EMBEDDINGS_MAGIC!r}")
    expected = EMBEDDINGS_HEADER.size + 4 * count * dim
    if len(body) != expected:
        raise WireError(f"embeddings body has {len(body)} bytes; {count} x {dim} float32 "
                        f"need {expected}")
    return count, dim, prompt_tokens, memoryview(body)[EMBEDDINGS_HEADER.size:]


# -- token ids (gateway → container) --------------------------------------------------------
def encode_token_ids(input_ids: Sequence[Sequence[int]]) -> bytes:
    lengths = array("I", map(len, input_ids))
    ids = array("i")
    for item in input_ids:  # fromlist converts in C: 2x faster than one iterator of all ids
        ids.fromlist(item if isinstance(item, list) else list(item))
    if not _LITTLE:  # pragma: no cover - every AWS and local target is little-endian
        lengths.byteswap()
        ids.byteswap()
    return TOKEN_IDS_HEADER.pack(TOKEN_IDS_MAGIC, len(input_ids)) + lengths.tobytes() + ids.tobytes()


# -- request metadata -----------------------------------------------------------------------
# ``priority=batch``: a Batch API line, which the container serves only while no online request
# waits; it queues as this prefix + the tenant (tenant ids have no ':').
BACKGROUND = "batch:"


def format_attributes(tenant_id: str, timeout_ms: int, model: str | None = None, *,
                      background: bool = False) -> str:
    value = f"tenant={quote(tenant_id, safe='')};timeout_ms={max(1, int(timeout_ms))}"
    if model is not None:
        value += f";model={quote(model, safe='')}"
    if background:
        value += ";priority=batch"
    if len(value) > MAX_ATTRIBUTES_CHARS:
        raise ValueError(f"custom attributes of {len(value)} characters exceed "
                         f"{MAX_ATTRIBUTES_CHARS}")
    return value


def parse_attributes(value: str) -> dict[str, str]:
    """``k=v;k=v`` → dict; unknown keys are kept, malformed parts ignored (the caller decides
    what a missing or wrong value means)."""
    out: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, raw = part.partition("=")
        if sep:
            out[key.strip()] = unquote(raw.strip())
    return out
