"""Attribute values in DynamoDB's wire format (``{"S": "x"}``, ``{"N": "1.5"}``, ...):
validation with DynamoDB's messages, numbers as its 38-digit decimals, comparison."""

from __future__ import annotations

import base64
import binascii
import decimal
from decimal import Decimal
from typing import Any

from infra.local.dynamodb.errors import SerializationException, ValidationException

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]

SET_TYPES = ("SS", "NS", "BS")
# DynamoDB's numbers: 38 significant digits, magnitudes from 1e-130 to below 1e126.
NUMBERS = decimal.Context(prec=38, Emax=125, Emin=-130, rounding=decimal.ROUND_HALF_EVEN,
                          traps=[decimal.InvalidOperation, decimal.Overflow, decimal.Inexact, decimal.Underflow])
_OVERFLOW = "Number overflow. Attempting to store a number with magnitude larger than supported range"


def invalid(message: str) -> ValidationException:
    return ValidationException(f"One or more parameter values were invalid: {message}")


def type_of(value: AttributeValue) -> str:
    return next(iter(value))


# -- numbers ---------------------------------------------------------------------------------
def canonical_number(text: Any) -> str:
    """DynamoDB's canonical text of a number ("1.50" -> "1.5", "1e2" -> "100"), or its error."""
    if not isinstance(text, str):
        raise SerializationException("NUMBER_VALUE cannot be converted to String")
    if text.isascii() and text.isdigit() and not text.startswith("0") and len(text) <= 38:
        return text  # most numbers: plain integers
    try:
        number = Decimal(text.strip())
    except decimal.InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise ValidationException(f"The parameter cannot be converted to a numeric value: {text}")
    return _format(number)


def _format(number: Decimal) -> str:
    if number.is_zero():
        return "0"
    number = number.normalize(decimal.Context(prec=1000))
    if len(number.as_tuple().digits) > 38:
        raise ValidationException("Attempting to store more than 38 significant digits in a Number")
    if number.adjusted() > 125:
        raise ValidationException(_OVERFLOW)
    if number.adjusted() < -130:
        raise ValidationException("Number underflow. Attempting to store a number with magnitude smaller than "
                                  "supported range")
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def arithmetic(operation: str, left: str, right: str) -> str:
    """``left + right`` or ``left - right`` with DynamoDB's precision and range."""
    try:
        a, b = Decimal(left), Decimal(right)
        result = NUMBERS.add(a, b) if operation == "+" else NUMBERS.subtract(a, b)
    except (decimal.Overflow, decimal.Inexact, decimal.Underflow, decimal.InvalidOperation):
        raise ValidationException(_OVERFLOW) from None
    return _format(result)


# -- validation ------------------------------------------------------------------------------
def _binary(text: Any) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise SerializationException("Base64 encoded length is expected a multiple of 4 bytes") from None


def normalize(value: Any) -> AttributeValue:
    """A validated copy of one attribute value, numbers in canonical form."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ValidationException("Supplied AttributeValue is empty, must contain exactly one of the supported "
                                  "datatypes" if not value else "Supplied AttributeValue has more than one "
                                  "datatypes set, must contain exactly one of the supported datatypes")
    kind, data = next(iter(value.items()))
    checks = {"S": lambda: isinstance(data, str), "B": lambda: _binary(data) is not None,
              "BOOL": lambda: isinstance(data, bool), "NULL": lambda: data is True}
    if kind in checks:
        if not checks[kind]():
            raise SerializationException(f"{kind} value is not of the expected type")
        return value
    if kind == "N":
        return {"N": canonical_number(data)}
    if kind == "M" and isinstance(data, dict):
        return {"M": {name: normalize(member) for name, member in data.items()}}
    if kind == "L" and isinstance(data, list):
        return {"L": [normalize(member) for member in data]}
    if kind in SET_TYPES and isinstance(data, list):
        if not data:
            raise invalid("An set may not be empty")
        members = [canonical_number(n) for n in data] if kind == "NS" else list(data)
        if len(set(members)) != len(members):
            raise invalid(f"Input collection [{', '.join(map(str, data))}] contains duplicates.")
        return {kind: members}
    raise SerializationException(f"Unknown or malformed AttributeValue type: {kind}")


def normalize_item(item: Any) -> Item:
    if not isinstance(item, dict):
        raise SerializationException("Start of list found where not expected")
    return {name: normalize(value) for name, value in item.items()}


# -- comparison ------------------------------------------------------------------------------
def equal(a: AttributeValue | None, b: AttributeValue | None) -> bool:
    """DynamoDB's ``=`` on normalized values: sets compare unordered, everything else exactly."""
    if a is None or b is None or type_of(a) != type_of(b):
        return False
    kind = type_of(a)
    if kind in SET_TYPES:
        return set(a[kind]) == set(b[kind])
    if kind == "M":
        return a["M"].keys() == b["M"].keys() and all(equal(v, b["M"][k]) for k, v in a["M"].items())
    if kind == "L":
        return len(a["L"]) == len(b["L"]) and all(equal(x, y) for x, y in zip(a["L"], b["L"], strict=True))
    return a == b


def compare(a: AttributeValue | None, b: AttributeValue | None) -> int | None:
    """-1, 0 or 1 for two values of one ordered type (S by code point, which is UTF-8 byte
    order, N numerically, B bytewise); None otherwise."""
    if a is None or b is None or type_of(a) != type_of(b) or type_of(a) not in ("S", "N", "B"):
        return None
    kind = type_of(a)
    x: Any
    y: Any
    x, y = ((Decimal(a["N"]), Decimal(b["N"])) if kind == "N" else
            (_binary(a["B"]), _binary(b["B"])) if kind == "B" else (a["S"], b["S"]))
    return (x > y) - (x < y)
