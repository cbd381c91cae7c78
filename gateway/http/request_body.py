"""Reading a request body: the one parser every route's body goes through (the resolver's
``body`` and the thin POST /v1/embeddings path), so both give the same 413 and 400 answers."""

from __future__ import annotations

import base64
import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from gateway.errors import InvalidRequestError, PayloadTooLargeError

M = TypeVar("M", bound=BaseModel)


def parse_body(raw: str | None, base64_encoded: bool, model: type[M], limit: int) -> M:
    """The body as ``model``: 413 over ``limit`` bytes, 400 for anything that is not a JSON
    object of the right shape, with the offending field as ``param``."""
    raw_text = raw or "{}"
    if base64_encoded and raw:
        try:
            raw_text = base64.b64decode(raw).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequestError("The body is not valid UTF-8 JSON.") from None
    if len(raw_text.encode("utf-8", "surrogatepass")) > limit:
        raise PayloadTooLargeError(f"The body is over {limit} bytes.")
    try:
        document = json.loads(raw_text)
    except (ValueError, RecursionError):
        raise InvalidRequestError("The body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise InvalidRequestError("The body must be a JSON object.")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequestError(f"Invalid '{where}': {first['msg']}", param=where or None) from None
    except RecursionError:
        raise InvalidRequestError("The body is nested too deeply.") from None
