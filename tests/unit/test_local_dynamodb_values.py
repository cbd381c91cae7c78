"""The local DynamoDB's attribute values: key encodings sort as DynamoDB sorts keys (N
numerically, S by UTF-8 bytes, B bytewise), numbers keep DynamoDB's precision and range,
and expressions parse with DynamoDB's errors. No server: the functions themselves."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.local.dynamodb import expressions as ex
from infra.local.dynamodb import values as av
from infra.local.dynamodb.errors import ValidationException

numbers = st.decimals(allow_nan=False, allow_infinity=False, places=None, min_value=Decimal("-1e30"),
                      max_value=Decimal("1e30")).map(lambda d: av.format_number(av.parse_number(f"{d:.20g}")))


@given(numbers, numbers)
def test_number_keys_sort_numerically(a: str, b: str) -> None:
    ka, kb = av.encode_key({"N": a}), av.encode_key({"N": b})
    assert (ka < kb) == (Decimal(a) < Decimal(b))
    assert (ka == kb) == (Decimal(a) == Decimal(b))


@given(st.text(), st.text())
def test_string_keys_sort_by_utf8_bytes(a: str, b: str) -> None:
    assert (av.encode_key({"S": a}) < av.encode_key({"S": b})) == (a.encode("utf-8", "surrogatepass")
                                                                    < b.encode("utf-8", "surrogatepass"))


@given(st.binary(min_size=1), st.binary())
def test_begins_with_bounds_cover_exactly_the_prefixed_keys(prefix: bytes, key: bytes) -> None:
    successor = av.prefix_successor(prefix)
    inside = prefix <= key and (successor is None or key < successor)
    assert inside == key.startswith(prefix)


@pytest.mark.parametrize(("text", "canonical"), [("1.50", "1.5"), ("1e2", "100"), ("-0.0", "0"), ("007", "7"),
                                                 ("0.000", "0"), ("-12.340", "-12.34"), ("1E-5", "0.00001")])
def test_numbers_are_canonical(text: str, canonical: str) -> None:
    assert av.normalize({"N": text}) == {"N": canonical}


@pytest.mark.parametrize("text", ["1" * 39, "1e126", "1e-131", "abc", "NaN", "Infinity"])
def test_numbers_dynamodb_cannot_store_are_refused(text: str) -> None:
    with pytest.raises(ValidationException):
        av.normalize({"N": text})


def test_arithmetic_is_exact_to_38_digits() -> None:
    assert av.arithmetic("+", "0.1", "0.2") == "0.3"
    assert av.arithmetic("-", "1" * 38, "1") == "1" * 37 + "0"
    with pytest.raises(ValidationException):
        av.arithmetic("+", "9" * 38, "0.1")  # would need 39 digits


def test_expressions_are_parsed_once_and_keep_their_placeholders() -> None:
    parsed = ex.condition("attribute_not_exists(#p) AND (n BETWEEN :lo AND :hi OR size(l) > :n)")
    assert parsed is ex.condition("attribute_not_exists(#p) AND (n BETWEEN :lo AND :hi OR size(l) > :n)")
    assert parsed.names == {"#p"} and parsed.values == {":lo", ":hi", ":n"}


@pytest.mark.parametrize(("parse", "text", "message"), [
    (ex.condition, "a = ", "Syntax error"),
    (ex.condition, "status = :s", "reserved keyword; reserved keyword: status"),
    (ex.condition, "nope(a)", "Invalid function name; function: nope"),
    (ex.condition, "attribute_exists(a, b)", "Incorrect number of operands"),
    (ex.condition, "size(a)", "not allowed to be used this way"),
    (ex.update, "SET a = :v SET b = :v", 'The "SET" section can only be used once'),
    (ex.update, "SET a = :v REMOVE a.b", "Two document paths overlap"),
    (ex.update, "SET a = size(b)", "not allowed in an update expression"),
    (ex.projection, "a, a.b", "Two document paths overlap"),
])
def test_expression_errors(parse, text: str, message: str) -> None:
    with pytest.raises(ValidationException) as raised:
        parse(text)
    assert message in raised.value.message


def test_updates_never_change_the_old_item() -> None:
    old = {"pk": {"S": "k"}, "m": {"M": {"a": {"L": [{"N": "1"}]}}}, "s": {"SS": ["x"]}}
    parsed = ex.update("SET m.a[0] = :two, m.b = :two ADD s :y REMOVE m.c")
    bindings = ex.Bindings(None, {":two": {"N": "2"}, ":y": {"SS": ["y"]}}, [parsed])
    new, changed = ex.apply_update(parsed, old, bindings, ("pk",))
    assert old == {"pk": {"S": "k"}, "m": {"M": {"a": {"L": [{"N": "1"}]}}}, "s": {"SS": ["x"]}}
    assert new["m"] == {"M": {"a": {"L": [{"N": "2"}]}, "b": {"N": "2"}}} and sorted(new["s"]["SS"]) == ["x", "y"]
    assert changed == [("m", "a", 0), ("m", "b"), ("m", "c"), ("s",)]
