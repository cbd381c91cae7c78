"""The Batch API (OpenAI's Files and Batches for ``/v1/embeddings``): a tenant's own files and
batches, so ``client.files`` and ``client.batches`` work unchanged. A file or batch of another
tenant is a 404, as one that does not exist."""

from __future__ import annotations

import base64
import email.parser
import email.policy
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from gateway.domain.plans import MAX_BATCH_FILE_BYTES
from gateway.domain.scopes import Scope
from gateway.errors import InvalidRequestError, PayloadTooLargeError
from gateway.http.resolver import body, container_of, event_of, header, metered_caller, query
from gateway.http.responses import json_response
from gateway.models.batches import CreateBatchRequest

router = Router()
MULTIPART_SLACK = 64 * 1024  # the form's other fields and boundaries around the file


def _form(raw: str | None, base64_encoded: bool, content_type: str | None) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body: field name -> (file name, bytes)."""
    data = base64.b64decode(raw or "") if base64_encoded else (raw or "").encode("utf-8", "surrogateescape")
    if len(data) > MAX_BATCH_FILE_BYTES + MULTIPART_SLACK:  # first, as every route's 413
        raise PayloadTooLargeError(f"The file is over {MAX_BATCH_FILE_BYTES} bytes.")
    if not content_type or not content_type.lower().startswith("multipart/form-data"):
        raise InvalidRequestError("Send the file as multipart/form-data (fields 'file' and 'purpose').",
                                  param="Content-Type")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + data)
    if not message.is_multipart():
        raise InvalidRequestError("The multipart body could not be read.", param="file")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


@router.post("/v1/files")
def upload_file() -> Response:
    caller = metered_caller(router, Scope.INFERENCE)
    event = event_of(router)
    form = _form(event.body, bool(event.is_base64_encoded), header(router, "Content-Type"))
    if "file" not in form:
        raise InvalidRequestError("The form has no 'file' field.", param="file")
    purpose = form.get("purpose", (None, b""))[1].decode("utf-8", "replace").strip()
    filename, data = form["file"]
    record = container_of(router).batches.upload_file(caller, filename=filename or "batch.jsonl", purpose=purpose,
                                                      data=data)
    return json_response(record.public())


@router.get("/v1/files/<file_id>")
def get_file(file_id: str) -> Response:
    caller = metered_caller(router, Scope.INFERENCE)
    return json_response(container_of(router).batches.get_file(caller, file_id).public())


@router.get("/v1/files/<file_id>/content")
def file_content(file_id: str) -> Response:
    caller = metered_caller(router, Scope.INFERENCE)
    content = container_of(router).batches.content_or_link(caller, file_id)
    if isinstance(content, str):  # too large for a Lambda's answer: where it is served
        return Response(status_code=302, headers={"Location": content}, body="")
    return Response(status_code=200, content_type="application/jsonl", body=content.decode("utf-8"))


@router.delete("/v1/files/<file_id>")
def delete_file(file_id: str) -> Response:
    caller = metered_caller(router, Scope.INFERENCE)
    return json_response(container_of(router).batches.delete_file(caller, file_id))


@router.post("/v1/batches")
def create_batch() -> Response:
    caller = metered_caller(router, Scope.INFERENCE)
    request = body(router, CreateBatchRequest)
    return json_response(container_of(router).batches.create_batch(caller, request).public())


@router.get("/v1/batches")
def list_batches() -> Response:
    caller = metered_caller(router, Scope.INFERENCE)
    limit = _limit(query(router, "limit"))
    records, more = container_of(router).batches.list_batches(caller, after=query(router, "after", max_length=64),
                                                              limit=limit)
    items: list[dict[str, Any]] = [r.public() for r in records]
    return json_response({"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
                          "last_id": items[-1]["id"] if items else None, "has_more": more})


@router.get("/v1/batches/<batch_id>")
def get_batch(batch_id: str) -> Response:
    caller = metered_caller(router, Scope.INFERENCE)
    return json_response(container_of(router).batches.get_batch(caller, batch_id).public())


@router.post("/v1/batches/<batch_id>/cancel")
def cancel_batch(batch_id: str) -> Response:
    caller = metered_caller(router, Scope.INFERENCE)
    return json_response(container_of(router).batches.cancel_batch(caller, batch_id).public())


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidRequestError("'limit' is a whole number from 1 to 100.", param="limit")
    return int(raw)
