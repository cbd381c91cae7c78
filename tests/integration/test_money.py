"""Money controls (CONTRACT.md §8) through the billing and embeddings services, on a real
redis-server and the local DynamoDB: exact prices (flat and graduated), prepaid credit, hard
and soft budgets with their alerts, a key's own limits and budget, balances, idempotency, and
state rebuilt from DynamoDB after Redis loses it. The container's answers come from a stand-in
that returns well-formed vectors (the real model's path is tested elsewhere): what is under test
is what each request is charged."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gateway.adapters.dynamo import sums_of
from gateway.adapters.inference import Embeddings
from gateway.adapters.redis_store import events_stream
from gateway.domain.keys import hash_key, new_key
from gateway.domain.plans import Limits, Plan, Tier
from gateway.domain.scopes import Scope
from gateway.errors import ConflictError, InvalidRequestError, PaymentRequiredError, QuotaExceededError, RateLimitError
from gateway.models.api import CreateCredit, CreateKey, CreateTenant, EmbeddingsRequest, UpdateKey, UpdateTenant
from gateway.models.records import KeyRecord, TenantRecord, rfc3339, utcnow
from gateway.services.calls import Call
from gateway.wiring import Container

MODEL = "all-MiniLM-L6-v2"
# Plans whose prices make each token count (1.00 a token flat; 2.00 then 0.50 a token past the
# month's 10th), so amounts stay in whole cents as credits and budgets must be.
METERED = Plan(name="metered", currency="USD",
               limits=Limits(requests_per_minute=10_000, tokens_per_minute=10_000_000, monthly_tokens=10**12,
                             max_concurrent_requests=64),
               price_per_1k_tokens={MODEL: Decimal("1000")})
GRADUATED = Plan(name="graduated", currency="USD", limits=METERED.limits,
                 tiers={MODEL: [Tier(up_to=10, price_per_1k_tokens=Decimal("2000")),
                                Tier(up_to=None, price_per_1k_tokens=Decimal("500"))]})
WORDS = {3: "a", 4: "hello world", 5: "one two three"}  # text -> prompt tokens, [CLS] and [SEP] included


class Vectors:
    """The inference container's answer for any ids: unit vectors, the exact token count."""

    def embed(self, input_ids: list[list[int]], *, tenant_id: str, timeout_s: float,
              model: str | None = None) -> Embeddings:
        one = b"\x00\x00\x80\x3f" + bytes(4 * 383)  # [1.0, 0, 0, ...] little-endian float32
        return Embeddings(count=len(input_ids), dim=384, prompt_tokens=sum(map(len, input_ids)),
                          data=one * len(input_ids))

    def ready(self) -> bool:
        return True


class Money:
    """A wired container and the calls a test makes, as the API makes them."""

    def __init__(self, container: Container) -> None:
        self.c = Container(container.settings, dynamodb=container.dynamodb, inference=Vectors())
        for plan in (METERED, GRADUATED):
            self.c.accounts.put_plan(plan, 1)
        operators = TenantRecord(id="ten_operators", name="operators", plan="internal", created_at=rfc3339(utcnow()))
        self.c.accounts.create_tenant(operators)
        parsed = new_key()
        self.c.accounts.create_key(KeyRecord(id=parsed.key_id, tenant_id=operators.id, scopes=[Scope.ADMIN.value],
                                             key_hash=hash_key(parsed.plaintext, self.c.pepper),
                                             created_at=rfc3339(utcnow())))
        self.admin = self.c.authenticator.authenticate(parsed.plaintext, Scope.ADMIN, fresh=True)

    def call(self, idempotency_key: str | None = None) -> Call:
        return Call(self.admin, uuid.uuid4().hex, idempotency_key)

    def tenant(self, plan: str = "metered", **changes: object) -> str:
        tenant = self.c.billing.create_tenant(CreateTenant(name="acme", plan=plan), self.call())
        if changes:
            self.c.billing.update_tenant(tenant["id"], UpdateTenant.model_validate(changes), self.call())
        return str(tenant["id"])

    def key(self, tenant_id: str, **body: object) -> str:
        return str(self.c.billing.create_key(tenant_id, CreateKey.model_validate(body), self.call())["key"])

    def grant(self, tenant_id: str, amount: str, expires_at: datetime | None = None) -> dict:
        body = {"amount": amount, "expires_at": expires_at.isoformat() if expires_at else None}
        return self.c.billing.grant_credits(tenant_id, CreateCredit.model_validate(body), self.call())

    def embed(self, key: str, text: str = "a") -> object:
        caller = self.c.authenticator.authenticate(key, Scope.INFERENCE, fresh=False)
        return self.c.embeddings.create(EmbeddingsRequest(model=MODEL, input=text), caller, uuid.uuid4().hex)

    def flush(self, tenant_id: str) -> None:
        assert self.c.flusher.flush([tenant_id]).errors == []

    def balance(self, tenant_id: str) -> dict:
        return self.c.billing.balance(tenant_id)

    def events(self, tenant_id: str) -> list[dict]:
        return [{k.decode(): v.decode() for k, v in fields.items()}
                for _, fields in self.c.redis.xrange(events_stream(tenant_id))]


@pytest.fixture
def money(container) -> Money:  # type: ignore[no-untyped-def]
    return Money(container)


# -- prices ---------------------------------------------------------------------------------
def test_each_request_pays_its_exact_price_and_the_report_is_their_sum(money):
    tenant = money.tenant()
    key = money.key(tenant)
    costs = [money.embed(key, WORDS[n]).cost for n in (3, 4, 5, 3)]
    assert costs == ["3", "4", "5", "3"]  # 1.00 a token
    money.flush(tenant)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    [row] = money.c.reports.usage(start=today, end=today, tenant_id=tenant, group_by="tenant")
    assert Decimal(row["cost"]) == sum(map(Decimal, costs)) == Decimal("15")


def test_a_request_crossing_a_tier_boundary_pays_each_part_at_its_own_price(money):
    # 10 tokens at 2.00, then 0.50: the month's tokens 9..13 (5 tokens) cost 1 x 2 + 4 x 0.5 = 4.
    tenant = money.tenant("graduated")
    key = money.key(tenant)
    first, second, third = (money.embed(key, WORDS[n]) for n in (4, 5, 5))
    assert (first.cost, second.cost) == ("8", "10")  # tokens 0-3, then 4-8: the first tier
    assert third.cost == "4" and third.decision.tier_tokens == (1, 4)
    money.flush(tenant)
    month = datetime.now(UTC).strftime("%Y-%m")
    invoice = money.c.reports.invoices(month=month)
    [line] = [x for x in invoice["lines"] if x["tenant_id"] == tenant]
    assert (line["amount"], line["unit_price_per_1k_tokens"]) == ("22.00", "tiered")
    assert [t["tokens"] for t in line["tiers"]] == [10, 4]


def test_a_refunded_request_gives_its_place_in_the_tiers_back(money):
    # The tier position counts reserved tokens: a request that fails is refunded, and the next
    # one takes its place at its price.
    tenant = money.tenant("graduated")
    key = money.key(tenant)

    class Fails(Vectors):
        def embed(self, input_ids, *, tenant_id, timeout_s, model=None):  # type: ignore[no-untyped-def]
            raise RuntimeError("the container fell over")

    money.c.embeddings.inference = Fails()
    with pytest.raises(RuntimeError):
        money.embed(key, WORDS[5])
    money.c.embeddings.inference = Vectors()
    assert money.embed(key, WORDS[5]).decision.tier_tokens == (5, 0)  # still in the first tier


# -- prepaid credit ---------------------------------------------------------------------------
def test_prepaid_credit_is_spent_soonest_expiring_first_and_never_below_zero(money):
    tenant = money.tenant(billing={"mode": "prepaid"})
    key = money.key(tenant)
    with pytest.raises(PaymentRequiredError) as refused:
        money.embed(key)  # no credit yet
    assert (refused.value.status, refused.value.code) == (402, "insufficient_credits")
    later = money.grant(tenant, "10.00")  # never expires
    sooner = money.grant(tenant, "5.00", expires_at=datetime.now(UTC) + timedelta(days=1))
    first = money.embed(key, WORDS[4])  # 4.00
    assert first.decision.debits == f"{sooner['id']}:4000000000"
    second = money.embed(key, WORDS[3])  # 3.00: 1.00 left on the sooner grant, 2.00 from the later one
    assert second.decision.debits == f"{sooner['id']}:1000000000,{later['id']}:2000000000"
    balance = money.balance(tenant)
    assert balance["credits_remaining"] == "8" and balance["month_to_date_cost"] == "7"
    # spend down to what is left, then one request more than that is refused: never negative
    for _ in range(2):
        money.embed(key, WORDS[4])
    assert money.balance(tenant)["credits_remaining"] == "0"
    with pytest.raises(PaymentRequiredError):
        money.embed(key, WORDS[3])
    assert money.balance(tenant)["credits_remaining"] == "0"


def test_an_expired_grant_gives_nothing(money):
    tenant = money.tenant(billing={"mode": "prepaid"})
    key = money.key(tenant)
    money.grant(tenant, "5.00", expires_at=datetime.now(UTC) + timedelta(seconds=2))
    money.embed(key)
    # three seconds later (the script's clock, which every caller shares)
    money.c.limiter.clock_ms = lambda: int((datetime.now(UTC) + timedelta(seconds=3)).timestamp() * 1000)
    with pytest.raises(PaymentRequiredError):
        money.embed(key)


def test_credit_alerts_fire_once_per_cause(money):
    tenant = money.tenant(billing={"mode": "prepaid", "low_balance_alert": "5.00"})
    key = money.key(tenant)
    money.grant(tenant, "10.00")
    money.embed(key, WORDS[4])  # 6 left: above the alert
    assert [e["type"] for e in money.events(tenant)] == []
    money.embed(key, WORDS[4])  # 2 left: below it
    for _ in range(2):  # 3 > 2: refused, and exhausted, once
        with pytest.raises(PaymentRequiredError):
            money.embed(key, "a")
    assert [e["type"] for e in money.events(tenant)] == ["credits.low", "credits.exhausted"]
    # A top-up opens a new cycle: once spent below the alert again, it fires again (a new id).
    money.grant(tenant, "6.00")  # 8 in all
    money.embed(key, "a")  # 5 left: at the alert, not below
    money.embed(key, "a")  # 2 left: below
    events = money.events(tenant)
    assert [e["type"] for e in events] == ["credits.low", "credits.exhausted", "credits.low"]
    assert len({e["id"] for e in events}) == 3


# -- budgets ----------------------------------------------------------------------------------
def test_a_hard_budget_refuses_the_request_that_would_pass_it_and_alerts_each_threshold_once(money):
    tenant = money.tenant(budget={"monthly_amount": "10.00", "hard": True, "alert_thresholds": [0.5, 0.8, 1.0]})
    key = money.key(tenant)
    spent = Decimal(0)
    for _ in range(3):
        spent += Decimal(money.embed(key, WORDS[3]).cost)  # 3 each: 9
    for _ in range(2):
        with pytest.raises(PaymentRequiredError) as refused:
            money.embed(key, WORDS[3])  # 12 > 10: refused, and nothing charged
        assert refused.value.code == "budget_exceeded"
    assert spent == Decimal("9") and money.balance(tenant)["month_to_date_cost"] == "9"
    events = money.events(tenant)
    crossed = [(e["type"], json.loads(e["data"])["threshold"]) for e in events]
    assert crossed == [("budget.threshold_crossed", "0.5"), ("budget.threshold_crossed", "0.8")]


def test_a_soft_budget_only_alerts(money):
    tenant = money.tenant(budget={"monthly_amount": "5.00", "hard": False, "alert_thresholds": [1.0]})
    key = money.key(tenant)
    for _ in range(4):
        money.embed(key, WORDS[3])  # 12 in all: past the budget, never refused
    assert [e["type"] for e in money.events(tenant)] == ["budget.threshold_crossed"]


# -- a key's own limits and budget --------------------------------------------------------------
def test_a_key_at_its_own_limit_never_slows_its_sibling(money):
    tenant = money.tenant()
    limited = money.key(tenant, limits={"requests_per_minute": 2})
    sibling = money.key(tenant)
    money.embed(limited)
    money.embed(limited)
    with pytest.raises(RateLimitError) as refused:
        money.embed(limited)
    assert "this key's requests" in refused.value.message
    for _ in range(5):
        money.embed(sibling)


def test_a_keys_monthly_quota_and_budget(money):
    tenant = money.tenant()
    quota = money.key(tenant, limits={"monthly_tokens": 7})
    money.embed(quota, WORDS[4])
    with pytest.raises(QuotaExceededError):
        money.embed(quota, WORDS[4])  # 8 > 7
    budgeted = money.key(tenant, budget={"monthly_amount": "5.00", "hard": True})
    money.embed(budgeted, WORDS[4])
    with pytest.raises(PaymentRequiredError) as refused:
        money.embed(budgeted, WORDS[4])
    assert refused.value.code == "budget_exceeded"
    money.embed(money.key(tenant), WORDS[4])  # the tenant itself is not limited


def test_a_key_limit_changed_by_patch_bites_on_the_next_request(money):
    tenant = money.tenant()
    key = money.key(tenant)
    key_id = money.c.authenticator.authenticate(key, Scope.INFERENCE, fresh=True).key.id
    money.embed(key)
    money.c.billing.update_key(key_id, UpdateKey.model_validate({"limits": {"monthly_tokens": 4}}), money.call())
    with pytest.raises(QuotaExceededError):
        money.embed(key, WORDS[3])  # 3 + 3 > 4, though the key record is still cached


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("amount, why", [("-1.00", "greater than zero"), ("0", "greater than zero"),
                                         ("ten", "decimal string"), ("1.001", "more decimals"),
                                         ("2000000", "at most"), ("NaN", "finite"), ("1e3", None)])
def test_bad_amounts_are_400s_naming_the_field(money, amount, why):
    tenant = money.tenant()
    if why is None:  # exponent notation is a decimal string too, and 1000 is a fine amount
        assert money.grant(tenant, amount)["amount"] == "1000"
        return
    with pytest.raises(InvalidRequestError, match=why) as refused:
        money.grant(tenant, amount)
    assert refused.value.param == "amount"
    with pytest.raises(InvalidRequestError) as refused:
        money.c.billing.update_tenant(tenant, UpdateTenant.model_validate(
            {"budget": {"monthly_amount": amount if amount != "0" else "-1"}}), money.call())
    assert refused.value.param == "budget.monthly_amount"


def test_thresholds_outside_the_unit_interval_are_refused():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        UpdateTenant.model_validate({"budget": {"monthly_amount": "1", "alert_thresholds": [0, 0.5]}})
    with pytest.raises(ValueError):
        UpdateTenant.model_validate({"budget": {"monthly_amount": "1", "alert_thresholds": [1.5]}})


# -- idempotency -------------------------------------------------------------------------------
def test_a_retried_credit_grant_is_granted_once_and_another_body_is_a_409(money):
    tenant = money.tenant(billing={"mode": "prepaid"})
    first = money.c.billing.grant_credits(tenant, CreateCredit(amount="5.00"), money.call("grant-1"))
    again = money.c.billing.grant_credits(tenant, CreateCredit(amount="5.00"), money.call("grant-1"))
    assert again == first
    assert money.balance(tenant)["credits_remaining"] == "5"
    with pytest.raises(ConflictError) as conflict:
        money.c.billing.grant_credits(tenant, CreateCredit(amount="6.00"), money.call("grant-1"))
    assert conflict.value.status == 409
    assert len(money.c.credits.grants(tenant)) == 1


def test_a_retried_key_creation_returns_the_same_secret_which_is_stored_sealed(money):
    tenant = money.tenant()
    first = money.c.billing.create_key(tenant, CreateKey(name="ci"), money.call("key-1"))
    again = money.c.billing.create_key(tenant, CreateKey(name="ci"), money.call("key-1"))
    assert again["key"] == first["key"] and again["id"] == first["id"]
    items = money.c.dynamodb.scan(TableName=money.c.settings.table_name)["Items"]
    assert not [item for item in items if first["key"] in str(item)]  # no plaintext at rest


# -- Redis loses its data -------------------------------------------------------------------------
def test_spent_quota_credit_and_budget_stay_spent_after_redis_loses_everything(money):
    prepaid = money.tenant(billing={"mode": "prepaid"})
    money.grant(prepaid, "10.00")
    budgeted = money.tenant(budget={"monthly_amount": "7.00", "hard": True})
    quota = money.tenant()
    money.c.billing.update_tenant(quota, UpdateTenant.model_validate({"limits": {"monthly_tokens": 8}}), money.call())
    keys = {t: money.key(t) for t in (prepaid, budgeted, quota)}
    for tenant, key in keys.items():
        money.embed(key, WORDS[4])
        money.embed(key, WORDS[3])  # 7 tokens: 7.00 of the 10.00 credit, all of the 7.00 budget
        money.flush(tenant)
    money.c.redis.flushall()  # what a lost MemoryDB or a restore without the latest state looks like
    # Each tenant is rebuilt from DynamoDB before its next request is admitted, exactly:
    with pytest.raises(PaymentRequiredError):
        money.embed(keys[prepaid], WORDS[4])  # credit: 4 > the 3 left
    assert money.embed(keys[prepaid], "a").cost == "3"  # exactly the 3 left
    assert money.balance(prepaid)["credits_remaining"] == "0"
    with pytest.raises(PaymentRequiredError):
        money.embed(keys[budgeted], "a")  # budget: 7 + 3 > 7
    with pytest.raises(QuotaExceededError):
        money.embed(keys[quota], WORDS[3])  # quota: 7 + 3 > 8


def test_a_tenant_seeded_from_dynamodb_counts_the_months_usage_exactly(money):
    tenant = money.tenant("graduated")
    key = money.key(tenant)
    for n in (5, 5, 4):
        money.embed(key, WORDS[n])
    money.flush(tenant)
    money.c.redis.flushall()
    # 14 tokens so far: the next one is past the 10-token tier
    assert money.embed(key, "a").decision.tier_tokens == (0, 3)
    rollups = money.c.usage.rollups(tenant, "2000-01-01", "2100-01-01")
    assert sum(sums_of(r).tokens for r in rollups) == 14


def test_an_idempotency_key_from_before_a_pepper_rotation_is_a_409_not_a_500(money):
    # GIVEN a call made with an Idempotency-Key: its answer is stored sealed under the pepper
    first = money.c.billing.create_tenant(CreateTenant(name="before", plan="metered"), money.call("rotation-1"))
    assert money.c.billing.create_tenant(CreateTenant(name="before", plan="metered"),
                                         money.call("rotation-1")) == first  # replayed
    # WHEN the pepper is rotated and the call is retried with the same key
    rotated = Container(money.c.settings.model_copy(update={"key_pepper": "a rotated pepper"}),
                        dynamodb=money.c.dynamodb)
    with pytest.raises(ConflictError) as refused:
        rotated.billing.create_tenant(CreateTenant(name="before", plan="metered"), money.call("rotation-1"))
    # THEN it is told to use a new key, and nothing was created twice
    assert refused.value.code == "idempotency_key_unreadable"
    tenants, _ = rotated.accounts.list_tenants(limit=1000)
    assert [t.id for t in tenants if t.name == "before"] == [first["id"]]
