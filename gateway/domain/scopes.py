"""Key scopes and what each implies."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    INFERENCE = "inference"
    USAGE_READ = "usage:read"
    FINANCE = "finance"
    ADMIN = "admin"


DEFAULT_SCOPES = (Scope.INFERENCE, Scope.USAGE_READ)
_IMPLIED = {Scope.ADMIN: {Scope.FINANCE}}


def grants(held: frozenset[str] | set[str] | list[str], required: Scope) -> bool:
    held_scopes = {Scope(s) for s in held if s in Scope._value2member_map_}
    for scope in list(held_scopes):
        held_scopes |= _IMPLIED.get(scope, set())
    return required in held_scopes
