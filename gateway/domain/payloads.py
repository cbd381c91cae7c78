"""What fits in one response: Lambda returns at most 6 MB from a synchronous invocation (the
API Gateway proxy result, whose body is the embeddings JSON as one escaped string), so a
request is refused up front, before any work, when its answer could exceed that.

The bound is the worst case, since the vectors are not known yet: a float is written as the
shortest text that reads back the same double (a float32 widened: up to 17 significant digits;
orjson writes 1e-5 to 1e-4 in positional notation, ``-0.000054982603614917025``, 24 characters
and a comma, the longest of any float32), and every quote of the body is escaped once more
inside the proxy result. base64 is exact: 4/3 of the float32 bytes."""

from __future__ import annotations

import math

LAMBDA_RESPONSE_LIMIT_BYTES = 6 * 1024 * 1024
# Status, headers (RateLimit, request id, content type), the list's envelope and its usage
# object: a few hundred bytes in practice; reserved generously.
ENVELOPE_BYTES = 16 * 1024
FLOAT_TEXT_BYTES = 24 + 1  # the longest float text, and its comma
# {\"object\":\"embedding\",\"index\":2047,\"embedding\":...}, as the proxy result escapes it
ITEM_OVERHEAD_BYTES = len('{\\"object\\":\\"embedding\\",\\"index\\":2047,\\"embedding\\":},')


def embedding_bytes(dimensions: int, encoding_format: str) -> int:
    """The most one embedding can add to the Lambda's response."""
    if encoding_format == "base64":
        return ITEM_OVERHEAD_BYTES + 4 * math.ceil(4 * dimensions / 3) + len('\\"\\"')
    return ITEM_OVERHEAD_BYTES + FLOAT_TEXT_BYTES * dimensions + len("[]")


def max_inputs(dimensions: int, encoding_format: str, limit_bytes: int = LAMBDA_RESPONSE_LIMIT_BYTES) -> int:
    """The most inputs whose embeddings surely fit in one response."""
    return (limit_bytes - ENVELOPE_BYTES) // embedding_bytes(dimensions, encoding_format)
