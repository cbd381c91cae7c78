"""Key and tenant request models, key views and credential parsing: no network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from gateway.domain.keys import new_key, parse_key
from gateway.http.auth import credential_from
from gateway.models.api import CreateKey, CreateTenant, EmbeddingsRequest, RotateKey, UpdateTenant
from gateway.models.records import KeyRecord, rfc3339
from gateway.services.billing_views import key_view


def future(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def test_create_key_defaults_and_dedupes_scopes():
    assert [s.value for s in CreateKey().scopes] == ["inference", "usage:read"]
    assert [s.value for s in CreateKey.model_validate({"scopes": ["admin", "admin", "finance"]}).scopes] == [
        "admin", "finance"]


@pytest.mark.parametrize("body", [
    {"scopes": []}, {"scopes": ["root"]}, {"scopes": "admin"}, {"scopes": [1]}, {"scopes": ["inference"] * 5},
    {"expires_at": 1893456000}, {"expires_at": "2030-01-01"}, {"expires_at": "2030-01-01T00:00:00"},
    {"expires_at": "2001-01-01T00:00:00Z"}, {"expires_at": "9999-12-31T23:59:59-05:00"},
    {"expires_at": "not a date"}, {"name": "x" * 201}, {"name": "tab\there"}, {"name": "\ud800"},
    {"name": "bad \ufffd bytes"}, {"name": 5}, {"unknown": True},
])
def test_create_key_rejects(body):
    with pytest.raises(ValidationError):
        CreateKey.model_validate(body)


def test_expires_at_is_normalised_to_utc():
    key = CreateKey.model_validate({"expires_at": "2031-06-01T12:00:00+02:00"})
    assert key.expires_at == datetime(2031, 6, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("model, body", [
    (CreateTenant, {"name": "", "plan": "free"}), (CreateTenant, {"name": "a"}),
    (CreateTenant, {"name": 1, "plan": "x"}),
    (CreateTenant, {"name": "a", "plan": "free", "id": "ten_x"}), (UpdateTenant, {"status": "deleted"}),
    (UpdateTenant, {"limits": {"monthly_tokens": 0}}), (UpdateTenant, {"limits": {"bogus": 1}}),
    (UpdateTenant, {"limits": {"requests_per_minute": 10**10}}), (RotateKey, {"grace_seconds": -1}),
    (RotateKey, {"grace_seconds": "5"}), (RotateKey, {"grace_seconds": 31 * 86400}),
    (RotateKey, {"grace_seconds": 1.5}),
])
def test_admin_bodies_reject_bad_values(model, body):
    with pytest.raises(ValidationError):
        model.model_validate(body)


def test_null_in_limits_marks_an_override_for_removal():
    update = UpdateTenant.model_validate({"limits": {"monthly_tokens": None, "requests_per_minute": 5}})
    assert update.limits is not None and update.limits.model_fields_set == {"monthly_tokens", "requests_per_minute"}


def test_embeddings_input_with_lone_surrogates_is_a_validation_error():
    with pytest.raises(ValidationError):
        EmbeddingsRequest.model_validate({"model": "m", "input": ["ok", "\ud800"]})
    assert EmbeddingsRequest.model_validate({"model": "m", "input": "Größe 🙂"}).input == ["Größe 🙂"]


def test_key_view_status_and_no_secret():
    now = datetime.now(UTC)
    base = KeyRecord(id="key_0123456789abcdef", tenant_id="ten_a", scopes=["inference"], key_hash="h" * 64,
                     created_at=rfc3339(now))
    assert key_view(base, now)["status"] == "active"
    assert key_view(base.model_copy(update={"expires_at": rfc3339(now - timedelta(seconds=1))}), now)["status"] == \
        "expired"
    assert key_view(base.model_copy(update={"revoked_at": rfc3339(now)}), now)["status"] == "revoked"
    assert "key_hash" not in key_view(base, now) and "h" * 64 not in str(key_view(base, now))


def test_credential_is_the_same_key_whichever_header_carries_it():
    key = new_key().plaintext
    assert credential_from(None, {"Authorization": [f"Bearer {key}"], "x-api-key": [key]}) == key
    assert parse_key(credential_from({"X-API-KEY": f"  {key}  "}, None)) is not None
