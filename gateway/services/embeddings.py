"""The hot path of one tenant request: tokenize, admit, forward, settle."""

from __future__ import annotations

import base64
import struct
import time
from datetime import UTC, datetime
from typing import Any

from gateway.adapters.dynamo import Store
from gateway.adapters.inference import InferenceClient
from gateway.adapters.local_limits import LocalLimiter
from gateway.adapters.redis_store import REDIS_ERRORS, Decision, RedisLimiter, Ticket, Verdict
from gateway.adapters.tokenizer import ModelTokenizer
from gateway.domain.registry import resolve
from gateway.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
)
from gateway.http.ratelimit_headers import ratelimit_headers
from gateway.models.api import EmbeddingsRequest
from gateway.models.records import UsageEvent
from gateway.services.auth import Principal
from gateway.services.limits import LimitsResolver
from gateway.telemetry import MetricUnit, logger, metrics

MAX_INPUT_ITEMS = 2048  # as OpenAI's embeddings API


class EmbeddingsService:
    def __init__(self, *, tokenizers: dict[str, ModelTokenizer], limiter: RedisLimiter,
                 inference: InferenceClient, store: Store, limits: LimitsResolver,
                 fallback: LocalLimiter | None = None) -> None:
        self.tokenizers = tokenizers
        self.limiter = limiter
        self.inference = inference
        self.store = store
        self.limits = limits
        # None: fail closed when Redis is unreachable (the default policy).
        self.fallback = fallback
        self._degraded = False

    def create(self, request: EmbeddingsRequest, principal: Principal,
               request_id: str) -> tuple[dict[str, Any], dict[str, str]]:
        spec = resolve(request.model)
        if spec is None:
            raise NotFoundError(f"The model '{request.model}' does not exist.", param="model",
                                code="model_not_found")
        if request.dimensions is not None and request.dimensions != spec.dimensions:
            raise InvalidRequestError(f"{spec.id} returns {spec.dimensions} dimensions only.",
                                      param="dimensions")
        tokenizer = self.tokenizers[spec.id]
        texts, ids = request.texts_or_ids()
        if len(texts or ids or []) > MAX_INPUT_ITEMS:
            raise InvalidRequestError(f"At most {MAX_INPUT_ITEMS} inputs per request.", param="input")
        input_ids = (tokenizer.encode_texts(texts, truncate=request.truncate) if texts is not None
                     else tokenizer.wrap_ids(ids or [], truncate=request.truncate))
        cost = sum(len(sequence) for sequence in input_ids)

        limits = self.limits.for_tenant(principal.tenant)
        if cost > limits.tokens_per_minute:
            raise InvalidRequestError(
                f"This request is {cost} tokens, more than the tenant's whole "
                f"tokens_per_minute capacity ({limits.tokens_per_minute}); split it.",
                param="input", code="request_too_large")

        now = datetime.now(UTC)
        ticket = Ticket(
            tenant_id=principal.tenant.id, key_id=principal.key.id,
            key_expires_ms=principal.key.expires_ms(), limits=limits, cost=cost,
            request_id=request_id, month=now.strftime("%Y-%m"),
        )
        decision = self._admit(ticket)
        headers = ratelimit_headers(limits, decision)
        _raise_unless_admitted(decision, headers)

        started = time.perf_counter()
        try:
            result = self.inference.embed(input_ids)
            if len(result.vectors) != len(input_ids):
                raise UpstreamError("the inference service returned a wrong number of embeddings")
        except Exception:
            self._refund(ticket, decision)
            raise
        metrics.add_metric(name="InferenceLatency", unit=MetricUnit.Milliseconds,
                           value=(time.perf_counter() - started) * 1000)

        event = UsageEvent(request_id=request_id, tenant_id=ticket.tenant_id, key_id=ticket.key_id,
                           model=spec.id, prompt_tokens=cost,
                           timestamp_ms=int(time.time() * 1000))
        self._charge(ticket, decision, event)
        metrics.add_metric(name="PromptTokens", unit=MetricUnit.Count, value=cost)

        data = [
            {"object": "embedding", "index": index, "embedding": _encode(vector, request.encoding_format)}
            for index, vector in enumerate(result.vectors)
        ]
        body = {"object": "list", "model": spec.id, "data": data,
                "usage": {"prompt_tokens": cost, "total_tokens": cost}}
        return body, headers

    def _admit(self, ticket: Ticket) -> Decision:
        try:
            decision = self.limiter.admit(ticket)
        except REDIS_ERRORS as error:
            self._set_degraded(True, error)
            if self.fallback is None:
                # Fail closed: the quota cannot be proven, so nothing is admitted or charged.
                raise ServiceUnavailableError("Usage limits cannot be checked right now; retry shortly.",
                                              headers={"Retry-After": "1"}) from error
            return self.fallback.admit(ticket)
        self._set_degraded(False)
        return decision

    def _set_degraded(self, degraded: bool, error: Exception | None = None) -> None:
        if degraded:
            metrics.add_metric(name="AdmissionDegraded", unit=MetricUnit.Count, value=1)
        if degraded != self._degraded:
            self._degraded = degraded
            if degraded:
                logger.warning("redis unreachable: admission degraded",
                               extra={"policy": "open" if self.fallback else "closed",
                                      "error": type(error).__name__})
            else:
                logger.info("redis reachable again: admission recovered")

    def _refund(self, ticket: Ticket, decision: Decision) -> None:
        try:
            self._settle(ticket, decision, charge=False)
        except REDIS_ERRORS:
            # The reservation stays counted until the month ends: the tenant loses those
            # tokens of quota, but is not billed for them (nothing enters the ledger).
            logger.warning("redis unavailable at refund", extra={"request_id": ticket.request_id})

    def _settle(self, ticket: Ticket, decision: Decision, *, charge: bool, event: UsageEvent | None = None) -> None:
        if decision.local:
            assert self.fallback is not None
            self.fallback.release(ticket)
            if charge and event is not None:
                self._record_directly(event)
            return
        self.limiter.settle(ticket, charge=charge, event=event.to_fields() if event else None)

    def _charge(self, ticket: Ticket, decision: Decision, event: UsageEvent) -> None:
        """Charge once: the event goes on the tenant's stream, or, when Redis is gone,
        straight into the ledger through the same idempotent write the flusher uses."""
        try:
            self._settle(ticket, decision, charge=True, event=event)
            return
        except REDIS_ERRORS:
            logger.warning("redis unavailable at settle; recording usage directly",
                           extra={"request_id": event.request_id})
        self._record_directly(event)

    def _record_directly(self, event: UsageEvent) -> None:
        try:
            self.store.record_usage([event])
        except Exception as error:
            logger.exception("usage could not be recorded; request refused",
                             extra={"request_id": event.request_id})
            raise ServiceUnavailableError("Usage could not be recorded; the request was not charged.",
                                          headers={"Retry-After": "1"}) from error


def _raise_unless_admitted(decision: Decision, headers: dict[str, str]) -> None:
    match decision.verdict:
        case Verdict.OK:
            return
        case Verdict.KEY_REVOKED | Verdict.KEY_EXPIRED:
            raise AuthenticationError("This API key has been revoked or has expired.", code="key_inactive")
        case Verdict.SUSPENDED:
            raise PermissionDeniedError("This tenant is suspended.", code="tenant_suspended")
        case Verdict.QUOTA:
            raise QuotaExceededError(
                "You exceeded your monthly token quota; ask your administrator to raise it.",
                headers=headers)
        case Verdict.REQUESTS | Verdict.TOKENS | Verdict.CONCURRENCY:
            limit = {Verdict.REQUESTS: "requests per minute", Verdict.TOKENS: "tokens per minute",
                     Verdict.CONCURRENCY: "concurrent requests"}[decision.verdict]
            error = RateLimitError(f"Rate limit reached for {limit}; retry after "
                                   f"{decision.retry_after_s} s.", headers=headers)
            error.type = "tokens" if decision.verdict is Verdict.TOKENS else "requests"
            raise error


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
