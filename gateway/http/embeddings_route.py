"""POST /v1/embeddings without the resolver: the REST proxy event in, the proxy response out.

The hot path's answer is built here once (``embeddings_answer``) and both ways in call it: the
thin route below, which functions/invoke sends every POST /v1/embeddings to, and the
resolver's route (routes/tenant_api.py), which keeps the endpoint for any other caller.
Errors, the headers every answer carries and the body's 413/400 go through the same functions
as every other route's (``guarded``, ``parse_body``), so for the same event both give the same
status, headers and body. What Powertools' resolver costs a request (routing, the event
wrapper, middleware, the Response builder) is spent only on the other routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.domain.scopes import Scope
from gateway.http.auth import credential_from
from gateway.http.ratelimit_headers import ratelimit_headers
from gateway.http.request_body import parse_body
from gateway.http.responses import Answer, guarded, json_answer, proxy_response
from gateway.models.api import EmbeddingsRequest

if TYPE_CHECKING:  # the hot path's clients load with the container, at the first request
    from gateway.services.embeddings import EmbeddingsResult
    from gateway.wiring import Container

PATH = "/v1/embeddings"


def is_embeddings(event: dict[str, Any]) -> bool:
    """The one request the thin route answers (API Gateway routes only POST here, and a HEAD
    or an OPTIONS on the path goes to the resolver, as before)."""
    return event.get("httpMethod") == "POST" and event.get("path") == PATH


def handle(container: Container, event: dict[str, Any], context: Any) -> dict[str, Any]:
    request_id = str(event["requestContext"]["requestId"])
    return proxy_response(guarded(request_id, lambda: embeddings_answer(container, event, context, request_id)))


def embeddings_answer(container: Container, event: dict[str, Any], context: Any, request_id: str) -> Answer:
    """Authenticate (the key record from the cache; its state is checked by admission), then
    parse, tokenize, admit, forward and settle (EmbeddingsService), then render."""
    credential = credential_from(event.get("headers"), event.get("multiValueHeaders"))
    caller = container.authenticator.authenticate(credential, Scope.INFERENCE, fresh=False)
    raw = event.get("body")
    limit = container.settings.max_body_bytes
    time_left_s = context.get_remaining_time_in_millis() / 1000 if context is not None else None
    result = container.embeddings.create_from_body(
        lambda: parse_body(raw, bool(event.get("isBase64Encoded")), EmbeddingsRequest, limit), caller, request_id,
        body_bytes=len(raw or ""), time_left_s=time_left_s)
    return json_answer(render_embeddings(result),
                       headers=ratelimit_headers(result.limits, result.decision, result.key_limits))


def render_embeddings(result: EmbeddingsResult) -> dict[str, Any]:
    """OpenAI's response body (gateway/services/embeddings.py ``openai_body``, which a batch's
    lines are answered with too; loaded with the service, at the first request)."""
    from gateway.services.embeddings import openai_body

    return openai_body(result.model, result.embeddings, result.prompt_tokens, result.encoding_format, result.cost)
