"""Reading the credential from a request: ``Authorization: Bearer`` or ``x-api-key``."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.errors import AuthenticationError


def _values(headers: Mapping[str, str] | None, multi: Mapping[str, list[str]] | None, name: str) -> list[str]:
    found: list[str] = []
    for source in (multi or {}), (headers or {}):
        for key, value in source.items():
            if key.lower() == name:
                found += value if isinstance(value, list) else [value]
    return list(dict.fromkeys(v.strip() for v in found))


def credential_from(headers: Mapping[str, str] | None, multi: Mapping[str, list[str]] | None) -> str:
    """The one API key the request presents. Two different keys (repeated headers, or
    Authorization and x-api-key disagreeing) are refused rather than guessed between."""
    candidates: list[str] = []
    for value in _values(headers, multi, "authorization"):
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("The Authorization header must be 'Bearer <api key>'.")
        candidates.append(token.strip())
    candidates += _values(headers, multi, "x-api-key")
    distinct = set(candidates)
    if not distinct:
        raise AuthenticationError(
            "You didn't provide an API key. Send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
            code="missing_api_key",
        )
    if len(distinct) > 1:
        raise AuthenticationError("The request presents more than one API key.", code="ambiguous_api_key")
    return distinct.pop()
