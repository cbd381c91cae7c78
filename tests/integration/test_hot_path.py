"""The hot path's own checks of what the container answers, on real Redis and DynamoDB."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from gateway.adapters.inference import Embeddings
from gateway.adapters.redis_store import month_key, tenant_key, usage_stream
from gateway.errors import UpstreamError
from gateway.models.api import EmbeddingsRequest
from gateway.wiring import Container
from tests.integration.conftest import make_principal


class Miscounting:
    """A container that computes the vectors but reports another token count."""

    def __init__(self, skew: int) -> None:
        self.skew = skew

    def embed(self, input_ids: list[list[int]], *, tenant_id: str, timeout_s: float,
              model: str | None = None) -> Embeddings:
        vector = bytes(4 * 384)
        return Embeddings(count=len(input_ids), dim=384, prompt_tokens=sum(map(len, input_ids)) + self.skew,
                          data=vector * len(input_ids))

    def ready(self) -> bool:
        return True


@pytest.mark.parametrize("skew", [-1, 1])
def test_a_container_that_disagrees_on_the_token_count_is_a_502_and_nothing_is_charged(container, skew):
    # GIVEN a tenant and a container that miscounts
    c = Container(container.settings, dynamodb=container.dynamodb, inference=Miscounting(skew))
    caller, _ = make_principal(c)
    month = datetime.now(UTC).strftime("%Y-%m")
    # WHEN a request runs
    with pytest.raises(UpstreamError) as refused:
        c.embeddings.create(EmbeddingsRequest(model="all-MiniLM-L6-v2", input="hello world"), caller, uuid.uuid4().hex)
    # THEN it fails as the upstream's fault, and the reservation is refunded: nothing was charged
    assert refused.value.status == 502
    assert int(c.redis.hget(month_key(caller.tenant.id, month), "tok") or 0) == 0
    assert c.redis.xlen(usage_stream(caller.tenant.id)) == 0
    assert c.redis.zcard(tenant_key(caller.tenant.id, "inflight")) == 0


def test_an_honest_container_is_charged_what_it_counted(container):
    c = Container(container.settings, dynamodb=container.dynamodb, inference=Miscounting(0))
    caller, _ = make_principal(c)
    result = c.embeddings.create(EmbeddingsRequest(model="all-MiniLM-L6-v2", input="hello world"), caller,
                                 uuid.uuid4().hex)
    assert result.prompt_tokens == 4 and result.embeddings.count == 1
    assert c.redis.xlen(usage_stream(caller.tenant.id)) == 1
