"""A small IAM policy evaluator: is one request (action, resource, condition context) allowed by
a set of identity-policy statements? Only what template.yaml's policies use is implemented.

No maintained library fits: moto's evaluator (moto.iam.access_control) ignores Condition blocks,
policyuniverse only expands actions, and the simulators on PyPI call AWS. Rules, as AWS documents them:
- evaluation: an explicit Deny wins, then any Allow, else the implicit deny
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
- Action/NotAction: case-insensitive, `*` and `?` wildcards
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_action.html
- Resource/NotResource: case-sensitive, `*` and `?` wildcards in each ARN segment
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html
- Condition: every operator must match (AND), any value of one key matches (OR); a key missing
  from the request fails the operator unless it ends in IfExists
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
- ForAllValues: every value of a multivalued key matches (true when the key is absent), ForAnyValue:
  at least one does https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: dict[str, str | tuple[str, ...]] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = f" {self.context}" if self.context else ""
        return f"{self.action} on {self.resource}{extra}"


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str, *, case: bool) -> bool:
    # fnmatch's [] classes are not IAM syntax: escape them, keep * and ?.
    regex = fnmatch.translate(pattern.replace("[", "\x00").replace("]", "\x01"))
    regex = regex.replace("\x00", r"\[").replace("\x01", r"\]")
    return re.match(regex, value, 0 if case else re.IGNORECASE) is not None


def _string_equals(pattern: str, value: str) -> bool:
    return pattern == value


def _string_like(pattern: str, value: str) -> bool:
    return _glob(pattern, value, case=True)


_OPERATORS = {
    "StringEquals": _string_equals,
    "StringLike": _string_like,
    "ArnEquals": _string_like,  # ArnEquals and ArnLike both take wildcards (same page)
    "ArnLike": _string_like,
    "StringEqualsIgnoreCase": lambda p, v: p.lower() == v.lower(),
}


def _condition_holds(condition: dict[str, Any], context: dict[str, Any]) -> bool:
    for qualified, keys in condition.items():
        qualifier, _, operator = qualified.rpartition(":")
        if_exists = operator.endswith("IfExists")
        base = operator.removesuffix("IfExists")
        negated = base.startswith(("StringNot", "ArnNot"))
        if negated:
            base = base.replace("StringNot", "String").replace("ArnNot", "Arn")
        if base not in _OPERATORS:
            raise NotImplementedError(f"condition operator {operator}")
        for key, wanted in keys.items():
            value = next((v for k, v in context.items() if k.lower() == key.lower()), None)  # keys: any case
            if value is None:
                if not (if_exists or negated or qualifier == "ForAllValues"):
                    return False
                continue
            values = list(value) if isinstance(value, tuple) else [value]
            hits = [any(_OPERATORS[base](str(p), v) for p in _listed(wanted)) for v in values]
            matched = all(hits) if qualifier == "ForAllValues" else any(hits)
            if matched == negated:
                return False
    return True


def statement_matches(statement: dict[str, Any], request: Request) -> bool:
    if "Action" in statement:
        acts = any(_glob(a, request.action, case=False) for a in _listed(statement["Action"]))
    else:
        acts = not any(_glob(a, request.action, case=False) for a in _listed(statement["NotAction"]))
    if not acts:
        return False
    if "Resource" in statement:
        on = any(_glob(r, request.resource, case=True) for r in _listed(statement["Resource"]))
    else:
        on = not any(_glob(r, request.resource, case=True) for r in _listed(statement["NotResource"]))
    return on and _condition_holds(statement.get("Condition") or {}, request.context)


def allowed(statements: list[dict[str, Any]], request: Request) -> bool:
    matching = [s for s in statements if statement_matches(s, request)]
    if any(s["Effect"] == "Deny" for s in matching):
        return False
    return any(s["Effect"] == "Allow" for s in matching)
