"""Attribute values in DynamoDB's wire format (``{"S": "x"}``, ``{"N": "1.5"}``, ...):
validation with DynamoDB's messages, numbers as 38-digit decimals, item sizes, and key
encodings whose byte order is DynamoDB's key order (S by UTF-8 bytes, N numerically,
B bytewise), so SQLite's BLOB ordering sorts keys exactly as DynamoDB does."""

from __future__ import annotations

import base64
import binascii
import decimal
import re
from decimal import Decimal
from typing import Any

from infra.local.dynamodb.errors import SerializationException, ValidationException

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]

TYPES = ("S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS")
SET_TYPES = {"SS": "S", "NS": "N", "BS": "B"}
KEY_TYPES = ("S", "N", "B")
MAX_ITEM_BYTES = 400 * 1024

# DynamoDB's numbers: 38 significant digits, magnitudes from 1e-130 to below 1e126.
NUMBERS = decimal.Context(prec=38, Emax=125, Emin=-130, rounding=decimal.ROUND_HALF_EVEN,
                          traps=[decimal.InvalidOperation, decimal.Overflow, decimal.Inexact, decimal.Underflow])
_OVERFLOW = "Number overflow. Attempting to store a number with magnitude larger than supported range"
_UNDERFLOW = "Number underflow. Attempting to store a number with magnitude smaller than supported range"


def invalid(message: str) -> ValidationException:
    return ValidationException(f"One or more parameter values were invalid: {message}")


# -- numbers ---------------------------------------------------------------------------------
_PLAIN_INTEGER = re.compile(r"-?[1-9][0-9]{0,37}")


def canonical_number(text: Any) -> str:
    """The number's canonical text; plain integers (most numbers) skip Decimal."""
    if isinstance(text, str) and _PLAIN_INTEGER.fullmatch(text):
        return text
    return format_number(parse_number(text))


def parse_number(text: Any) -> Decimal:
    if not isinstance(text, str):
        raise SerializationException("NUMBER_VALUE cannot be converted to String")
    try:
        number = Decimal(text.strip())
    except decimal.InvalidOperation:
        raise ValidationException(f"The parameter cannot be converted to a numeric value: {text}") from None
    if not number.is_finite():
        raise ValidationException(f"The parameter cannot be converted to a numeric value: {text}")
    return check_number(number)


def check_number(number: Decimal) -> Decimal:
    """The number as DynamoDB would store it, or DynamoDB's error when it cannot."""
    if number.is_zero():
        return Decimal(0)
    number = number.normalize(decimal.Context(prec=1000))
    if len(number.as_tuple().digits) > 38:
        raise ValidationException("Attempting to store more than 38 significant digits in a Number")
    if number.adjusted() > 125:
        raise ValidationException(_OVERFLOW)
    if number.adjusted() < -130:
        raise ValidationException(_UNDERFLOW)
    return number


def format_number(number: Decimal) -> str:
    """DynamoDB's canonical text: no exponent, no trailing zeros ("1.50" -> "1.5", "1e2" -> "100")."""
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def arithmetic(operation: str, left: str, right: str) -> str:
    """``left + right`` or ``left - right`` with DynamoDB's precision and range."""
    try:
        a, b = Decimal(left), Decimal(right)
        result = NUMBERS.add(a, b) if operation == "+" else NUMBERS.subtract(a, b)
    except (decimal.Overflow, decimal.Inexact, decimal.Underflow, decimal.InvalidOperation):
        raise ValidationException(_OVERFLOW) from None
    return format_number(check_number(result))


# -- validation ------------------------------------------------------------------------------
def type_of(value: AttributeValue) -> str:
    return next(iter(value))


def _binary(text: Any) -> bytes:
    if not isinstance(text, str):
        raise SerializationException("Binary value is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SerializationException("Base64 encoded length is expected a multiple of 4 bytes") from None


def normalize(value: Any) -> AttributeValue:
    """A validated copy of one attribute value, numbers in canonical form."""
    if not isinstance(value, dict) or not value:
        raise ValidationException("Supplied AttributeValue is empty, must contain exactly one of the supported "
                                  "datatypes")
    if len(value) > 1:
        raise ValidationException("Supplied AttributeValue has more than one datatypes set, must contain exactly one "
                                  "of the supported datatypes")
    kind, data = next(iter(value.items()))
    if kind == "S":
        if not isinstance(data, str):
            raise SerializationException("STRING_VALUE can not be converted to a String")
        return value
    if kind == "N":
        return {"N": canonical_number(data)}
    if kind == "B":
        _binary(data)
        return value
    if kind == "BOOL":
        if not isinstance(data, bool):
            raise SerializationException("BOOL_VALUE can not be converted to a Boolean")
        return value
    if kind == "NULL":
        if data is not True:
            raise invalid("Null attribute value types must have the value of true")
        return value
    if kind == "M":
        if not isinstance(data, dict):
            raise SerializationException("Start of list found where not expected")
        return {"M": {name: normalize(member) for name, member in data.items()}}
    if kind == "L":
        if not isinstance(data, list):
            raise SerializationException("Start of structure or map found where not expected")
        return {"L": [normalize(member) for member in data]}
    if kind in SET_TYPES:
        if not isinstance(data, list):
            raise SerializationException("Start of structure or map found where not expected")
        if not data:
            kind_name = {"SS": "string", "NS": "number", "BS": "binary"}[kind]
            raise invalid(f"An {kind_name} set  may not be empty")
        members = [canonical_number(n) for n in data] if kind == "NS" else list(data)
        if kind == "SS" and not all(isinstance(m, str) for m in members):
            raise SerializationException("STRING_VALUE can not be converted to a String")
        if kind == "BS":
            for member in members:
                _binary(member)
        if len(set(members)) != len(members):
            raise invalid(f"Input collection [{', '.join(map(str, data))}] contains duplicates.")
        return {kind: members}
    raise SerializationException(f"Unknown AttributeValue type: {kind}")


def normalize_item(item: Any) -> Item:
    if not isinstance(item, dict):
        raise SerializationException("Start of list found where not expected")
    return {name: normalize(value) for name, value in item.items()}


# -- comparison ------------------------------------------------------------------------------
def equal(a: AttributeValue | None, b: AttributeValue | None) -> bool:
    """DynamoDB's ``=`` on normalized values: sets compare unordered, everything else exactly."""
    if a is None or b is None:
        return False
    kind = type_of(a)
    if kind != type_of(b):
        return False
    if kind in SET_TYPES:
        return set(a[kind]) == set(b[kind])
    if kind == "M":
        return a["M"].keys() == b["M"].keys() and all(equal(v, b["M"][k]) for k, v in a["M"].items())
    if kind == "L":
        return len(a["L"]) == len(b["L"]) and all(equal(x, y) for x, y in zip(a["L"], b["L"], strict=True))
    return a == b


def scalar(value: AttributeValue) -> str | Decimal | bytes:
    """A scalar's natural Python value, ordered as DynamoDB orders it (str order is code
    point order, which is UTF-8 byte order)."""
    kind = type_of(value)
    if kind == "N":
        return Decimal(value["N"])
    if kind == "B":
        return _binary(value["B"])
    return value[kind]


def compare(a: AttributeValue | None, b: AttributeValue | None) -> int | None:
    """-1, 0 or 1 for two values of one ordered type (S, N, B); None otherwise."""
    if a is None or b is None:
        return None
    kind = type_of(a)
    if kind not in KEY_TYPES or kind != type_of(b):
        return None
    x, y = scalar(a), scalar(b)
    return (x > y) - (x < y)  # type: ignore[operator]


# -- key encoding ----------------------------------------------------------------------------
def _number_key(number: Decimal) -> bytes:
    """An order-preserving byte string for a number: sign class, then the exponent of the
    first digit, then the digits (inverted, and terminated, for negative numbers)."""
    if number.is_zero():
        return b"\x02"
    sign, digits, _ = number.as_tuple()
    exponent = number.adjusted() + 200  # 70..325: fits two bytes
    if sign == 0:
        return b"\x03" + exponent.to_bytes(2, "big") + bytes(digits)
    return b"\x01" + (1000 - exponent).to_bytes(2, "big") + bytes(9 - d for d in digits) + b"\x0a"


def encode_key(value: AttributeValue) -> bytes:
    kind = type_of(value)
    if kind == "S":
        return value["S"].encode()
    if kind == "N":
        return _number_key(Decimal(value["N"]))
    return _binary(value["B"])


def prefix_successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


# -- sizes -----------------------------------------------------------------------------------
def value_size(value: AttributeValue) -> int:
    kind, data = next(iter(value.items()))
    if kind == "S":
        return len(data.encode())
    if kind == "N":
        return _number_size(data)
    if kind == "B":
        return len(_binary(data))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in data)
    if kind == "NS":
        return sum(_number_size(n) for n in data)
    if kind == "BS":
        return sum(len(_binary(b)) for b in data)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in data)
    return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in data.items())


def _number_size(text: str) -> int:
    digits = len(text.lstrip("-").replace(".", "").strip("0")) or 1
    return (digits + 1) // 2 + 1


def item_size(item: Item) -> int:
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())
