"""The hot path of one tenant request: check, tokenize, admit, forward, settle.

The request's ``model`` picks everything per model (gateway/assets/models.json): the tokenizer
and its token limit, the model's own largest request, the plan's price for it (the tiers
admission charges, in the same atomic step as every limit) and the container's model on the
hop. A model the catalogue lacks is a 404 ``model_not_found``; one the tenant's plan does not
price, a 403 ``model_not_allowed``.

Exactly two limiter round trips on success (admit, settle); a large body costs a third, the
request gate, before it is parsed (gateway/services/gate.py has the order of the checks and
why). A tenant Redis does not hold is seeded from DynamoDB first (rare: created while Redis
was down, or lost with it). The cost is fixed at admission, in the same atomic step as every
limit and money check. What it returns is a result object; the route renders the body and
the RateLimit headers."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.adapters.dynamo import UsageLedger
from gateway.adapters.inference import Embeddings, InferenceClient
from gateway.adapters.tokenizer import CHARS_PER_TOKEN, ModelTokenizer
from gateway.domain.admission import AdmissionUnavailable, Decision, Limiter, Ticket, Verdict
from gateway.domain.money import fmt_nano
from gateway.domain.payloads import max_inputs
from gateway.domain.plans import API_MAX_REQUEST_TOKENS, LimitOverrides, Limits, Plan
from gateway.domain.registry import CATALOGUE, ModelSpec, resolve
from gateway.domain.usage import UsageEvent, ledger_shard, ledger_shards
from gateway.errors import (
    RETRY_SOON,
    Error,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
    UpstreamError,
)
from gateway.models.api import EmbeddingsRequest
from gateway.services.auth import Principal
from gateway.services.gate import RequestGate, raise_unless_admitted
from gateway.services.limits import LimitsResolver
from gateway.services.seeding import month_bounds
from gateway.telemetry import MetricUnit, logger, metrics

MAX_INPUT_ITEMS = 2048  # as OpenAI's embeddings API
# A body larger than this passes the request gate before it is parsed and tokenized. Below it
# that work is bounded (the tokenizer runs about 0.5 µs a character: 1 ms at most) and cheaper
# than the gate's extra round trip, which admission's one script makes anyway.
GATE_FIRST_BYTES = 2 * 1024


@dataclass(frozen=True, slots=True)
class EmbeddingsResult:
    """What one admitted, computed and charged request produced."""

    model: str
    embeddings: Embeddings
    prompt_tokens: int
    encoding_format: str
    limits: Limits
    decision: Decision
    key_limits: LimitOverrides  # the key's own limits (none set: empty)

    @property
    def cost(self) -> str:
        """The request's exact price, as a decimal string in the tenant's currency."""
        return fmt_nano(self.decision.cost_nano)


class EmbeddingsService:
    def __init__(self, *, tokenizers: dict[str, ModelTokenizer], limiter: Limiter, inference: InferenceClient,
                 usage: UsageLedger, limits: LimitsResolver, gate: RequestGate, fallback: Limiter | None = None,
                 timeout_s: float = 20.0, max_request_tokens: int = API_MAX_REQUEST_TOKENS) -> None:
        self.tokenizers = tokenizers
        self.limiter = limiter
        self.gate = gate
        self.inference = inference
        self.usage = usage
        self.limits = limits
        # None: fail closed when Redis is unreachable (the default policy).
        self.fallback = fallback
        self.timeout_s = timeout_s
        # This endpoint's largest request (its hardware's), on top of each plan's.
        self.max_request_tokens = max_request_tokens
        self._degraded = False

    def create_from_body(self, parse: Callable[[], EmbeddingsRequest], principal: Principal, request_id: str,
                         *, body_bytes: int, time_left_s: float | None = None) -> EmbeddingsResult:
        """The route's entry: ``parse`` reads the body, after the request gate when the body is
        large (parsing and tokenizing it is the expensive work the gate comes before)."""
        counted = body_bytes > GATE_FIRST_BYTES and self.gate.count(principal, request_id) is not None
        with self._counted_if_refused(principal, request_id, counted=counted):
            request = parse()
        return self.create(request, principal, request_id, counted=counted, time_left_s=time_left_s)

    def create(self, request: EmbeddingsRequest, principal: Principal, request_id: str,
               *, counted: bool = False, time_left_s: float | None = None) -> EmbeddingsResult:
        """``counted``: the request gate already took this request. ``time_left_s``: what the
        caller (the Lambda) has left; the inference call gets no more than that, less what
        settling needs."""
        limits = self.limits.for_tenant(principal.tenant)
        plan = self.limits.plan(principal.tenant.plan)
        with self._counted_if_refused(principal, request_id, counted=counted):
            spec, input_ids = self.tokenize(request, principal, limits, plan)
        cost = sum(len(sequence) for sequence in input_ids)

        now = datetime.now(UTC)
        pricing = plan.pricing(spec.id)  # this model's price on this plan: what admission charges
        ticket = Ticket(
            tenant_id=principal.tenant.id, key_id=principal.key.id,
            key_expires_ms=principal.key.expires_ms(), limits=limits, tokens=cost,
            request_id=request_id, month=now.strftime("%Y-%m"), pricing=pricing, counted=counted,
        )
        decision = self._admit(ticket, principal)
        if decision.verdict is Verdict.QUOTA or decision.verdict is Verdict.KEY_QUOTA:
            # A spent monthly quota comes back with the next month, not in a second (OpenAI
            # clients retry 429s by themselves: tell them when it is worth it).
            next_month_ms = month_bounds(now)[3]
            decision = dataclasses.replace(decision, retry_after_s=max(1, -(-(next_month_ms - int(
                now.timestamp() * 1000)) // 1000)))
        raise_unless_admitted(decision, limits, principal.key.limits)

        started = time.perf_counter()
        try:
            result = self.inference.embed(input_ids, tenant_id=ticket.tenant_id, model=spec.id,
                                          timeout_s=self._inference_timeout(time_left_s))
            if result.count != len(input_ids):
                raise UpstreamError("the inference service returned a wrong number of embeddings")
            if result.dim != spec.dimensions:
                raise UpstreamError(f"the inference service returned {result.dim} dimensions for {spec.id}")
            if result.prompt_tokens != cost:
                # The container ran on other tokens than we charge for: never bill a guess.
                logger.error("prompt token mismatch", extra={"request_id": request_id, "gateway": cost,
                                                             "container": result.prompt_tokens})
                raise UpstreamError("the inference service disagreed on the token count")
        except Exception:
            self._refund(ticket, decision)
            raise
        metrics.add_metric(name="InferenceLatency", unit=MetricUnit.Milliseconds,
                           value=(time.perf_counter() - started) * 1000)

        event = UsageEvent(request_id=request_id, tenant_id=ticket.tenant_id, key_id=ticket.key_id,
                           model=spec.id, prompt_tokens=cost, timestamp_ms=int(time.time() * 1000),
                           cost_nano=decision.cost_nano, debits=decision.debits, tier_tokens=decision.tier_tokens,
                           ledger_shard=ledger_shard(request_id, ledger_shards(limits.requests_per_minute)))
        self._charge(ticket, decision, event)
        metrics.add_metric(name="PromptTokens", unit=MetricUnit.Count, value=cost)
        return EmbeddingsResult(model=spec.id, embeddings=result, prompt_tokens=cost,
                                encoding_format=request.encoding_format, limits=limits, decision=decision,
                                key_limits=principal.key.limits)

    @contextmanager
    def _counted_if_refused(self, principal: Principal, request_id: str, *, counted: bool) -> Iterator[None]:
        """A 4xx before admission still costs a request, and the key's state and the request
        bucket answer first: a revoked key gets its 401, a tenant at its rate limit its 429."""
        try:
            yield
        except Error as error:
            if not counted and error.status < 500:
                self.gate.count(principal, request_id)
            raise

    def tokenize(self, request: EmbeddingsRequest, principal: Principal, limits: Limits, plan: Plan,
                 *, online: bool = True) -> tuple[ModelSpec, list[list[int]]]:
        """The request's token ids, each sequence framed by the model's start and end tokens;
        bounded before the tokenizer runs (characters), then exactly (tokens). A batch's line
        (``online`` False) is not held to the tenant's online per-minute capacity."""
        spec = resolve(request.model)
        if spec is None:
            raise NotFoundError(f"The model '{request.model}' does not exist.", param="model",
                                code="model_not_found")
        if not plan.includes(spec.id):
            raise PermissionDeniedError(
                f"The model '{spec.id}' is not included in your plan '{plan.name}'; "
                f"GET /v1/models lists the models it includes.", param="model", code="model_not_allowed")
        if request.dimensions is not None and request.dimensions != spec.dimensions:
            raise InvalidRequestError(f"{spec.id} returns {spec.dimensions} dimensions only.",
                                      param="dimensions")
        tokenizer = self.tokenizers[spec.id]
        texts, ids = request.texts_or_ids()
        count = len(texts or ids or [])
        if count > MAX_INPUT_ITEMS:
            raise InvalidRequestError(f"At most {MAX_INPUT_ITEMS} inputs per request.", param="input")
        _refuse_unless_the_answer_fits(count, spec.dimensions, request.encoding_format)
        allowed = min(limits.max_request_tokens, self.max_request_tokens,
                      principal.key.limits.max_request_tokens or API_MAX_REQUEST_TOKENS,
                      spec.max_request_tokens or API_MAX_REQUEST_TOKENS)
        if texts is not None:
            characters = sum(min(len(text), tokenizer.max_chars) for text in texts)
            if characters > allowed * CHARS_PER_TOKEN:
                raise InvalidRequestError(
                    f"This request is {characters} characters; requests are limited to {allowed} tokens "
                    f"(max_request_tokens), at most {allowed * CHARS_PER_TOKEN} characters; split it.",
                    param="input", code="request_too_large")
        input_ids = self.encode(spec, request)
        tokens = sum(len(sequence) for sequence in input_ids)
        if tokens > allowed:
            raise InvalidRequestError(
                f"This request is {tokens} tokens, more than the {allowed} allowed per request "
                f"(max_request_tokens); split it.", param="input", code="request_too_large")
        if online and tokens > limits.tokens_per_minute:
            raise InvalidRequestError(
                f"This request is {tokens} tokens, more than the tenant's whole "
                f"tokens_per_minute capacity ({limits.tokens_per_minute}); split it.",
                param="input", code="request_too_large")
        return spec, input_ids

    def encode(self, spec: ModelSpec, request: EmbeddingsRequest) -> list[list[int]]:
        """The token ids of a request already checked (``tokenize``; a batch's line again)."""
        tokenizer = self.tokenizers[spec.id]
        texts, ids = request.texts_or_ids()
        return (tokenizer.encode_texts(texts, truncate=request.truncate) if texts is not None
                else tokenizer.wrap_ids(ids or [], truncate=request.truncate))

    def _inference_timeout(self, time_left_s: float | None) -> float:
        if time_left_s is None:
            return self.timeout_s
        # Keep a second to settle or refund after the container answers (or does not).
        return max(0.1, min(self.timeout_s, time_left_s - 1.0))

    # -- admission and settlement ----------------------------------------------------------
    def _admit(self, ticket: Ticket, principal: Principal) -> Decision:
        try:
            decision = self.gate.decide(lambda: self.limiter.admit(ticket), ticket.tenant_id)
        except AdmissionUnavailable as error:
            self._set_degraded(True, error)
            if self.fallback is None or _money_decides(ticket, principal):
                # Fail closed: the quota (or credit, or a hard budget, or a graduated price)
                # cannot be proven, so nothing is admitted or charged.
                raise ServiceUnavailableError("Usage limits cannot be checked right now; retry shortly.",
                                              headers=RETRY_SOON) from error
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

    def _limiter_for(self, decision: Decision) -> Limiter:
        if decision.local:
            assert self.fallback is not None
            return self.fallback
        return self.limiter

    def _refund(self, ticket: Ticket, decision: Decision) -> None:
        try:
            self._limiter_for(decision).settle(ticket, decision, charge=False)
        except AdmissionUnavailable:
            # The reservation stays counted until the month ends: the tenant loses those
            # tokens of quota, but is not billed for them (nothing enters the ledger).
            logger.warning("redis unavailable at refund", extra={"request_id": ticket.request_id})

    def _charge(self, ticket: Ticket, decision: Decision, event: UsageEvent) -> None:
        """Charge once: the event goes on the tenant's stream, or, when Redis is gone (or
        the fallback decided), straight into the ledger through the flusher's idempotent write."""
        try:
            self._limiter_for(decision).settle(ticket, decision, charge=True, event=event)
            if not decision.local:
                return
        except AdmissionUnavailable:
            logger.warning("redis unavailable at settle; recording usage directly",
                           extra={"request_id": event.request_id})
        self._record_directly(event)

    def _record_directly(self, event: UsageEvent) -> None:
        try:
            self.usage.record_usage([event])
        except Exception as error:
            logger.exception("usage could not be recorded; request refused",
                             extra={"request_id": event.request_id})
            raise ServiceUnavailableError("Usage could not be recorded; the request was not charged.",
                                          headers=RETRY_SOON) from error


def openai_body(model: str, vectors: Embeddings, prompt_tokens: int, encoding_format: str,
                cost: str) -> dict[str, Any]:
    """OpenAI's embeddings answer: float lists, or base64 of the little-endian float32 bytes."""
    encode: Callable[[int], Any] = (
        (lambda i: base64.b64encode(vectors.raw(i)).decode()) if encoding_format == "base64" else vectors.vector
    )
    data = [{"object": "embedding", "index": i, "embedding": encode(i)} for i in range(vectors.count)]
    return {"object": "list", "model": model, "data": data,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "cost": cost}}


def list_models(plan: Plan) -> list[dict[str, object]]:
    """``GET /v1/models``: the catalogued models the plan includes, in OpenAI's shape, with ours
    (dimensions, the input token limit, this plan's price per 1,000 tokens)."""
    return [{"id": spec.id, "object": "model", "created": 0, "owned_by": spec.owned_by,
             "dimensions": spec.dimensions, "max_input_tokens": spec.max_tokens,
             "price_per_1k_tokens": plan.price_listing(spec.id), "currency": plan.currency,
             "description": spec.description}
            for spec in CATALOGUE if plan.includes(spec.id)]


def _refuse_unless_the_answer_fits(count: int, dimensions: int, encoding_format: str) -> None:
    """Before any work: an answer Lambda could not return (over 6 MB) is a 400 naming the
    largest count that fits, rather than a 502 after the inference was paid for."""
    fits = max_inputs(dimensions, encoding_format)
    if count > fits:
        hint = "" if encoding_format == "base64" else (
            f" With encoding_format 'base64' up to {min(max_inputs(dimensions, 'base64'), MAX_INPUT_ITEMS)} fit.")
        raise InvalidRequestError(
            f"The embeddings of {count} inputs may exceed the 6 MB response limit; at most {fits} inputs fit in "
            f"one request with encoding_format '{encoding_format}'.{hint}", param="input", code="response_too_large")


def _money_decides(ticket: Ticket, principal: Principal) -> bool:
    """Whether admitting this request needs money state only Redis holds: then no in-process
    fallback may guess (prepaid credit, a hard budget, a graduated price)."""
    tenant, key = principal.tenant, principal.key
    return (tenant.billing.mode == "prepaid" or bool(tenant.budget and tenant.budget.hard)
            or bool(key.budget and key.budget.hard) or len(ticket.pricing) > 1)
