"""The local DynamoDB's attribute values and expressions, without a server: numbers keep
DynamoDB's precision and range, expressions parse with DynamoDB's errors, and an update
never changes the item it started from."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.local.dynamodb import expressions as ex
from infra.local.dynamodb import values as av
from infra.local.dynamodb.errors import ValidationException


@pytest.mark.parametrize(("text", "canonical"), [("1.50", "1.5"), ("1e2", "100"), ("-0.0", "0"), ("007", "7"),
                                                 ("0.000", "0"), ("-12.340", "-12.34"), ("1E-5", "0.00001")])
def test_numbers_are_canonical(text: str, canonical: str) -> None:
    assert av.normalize({"N": text}) == {"N": canonical}


@pytest.mark.parametrize("text", ["1" * 39, "1e126", "1e-131", "abc", "NaN", "Infinity", "\u00b2"])
def test_numbers_dynamodb_cannot_store_are_refused(text: str) -> None:
    with pytest.raises(ValidationException):
        av.normalize({"N": text})


def test_arithmetic_is_exact_to_38_digits() -> None:
    assert av.arithmetic("+", "0.1", "0.2") == "0.3"
    assert av.arithmetic("-", "1" * 38, "1") == "1" * 37 + "0"
    with pytest.raises(ValidationException):
        av.arithmetic("+", "9" * 38, "0.1")  # would need 39 digits


@given(st.text(), st.text())
def test_strings_compare_by_utf8_bytes(a: str, b: str) -> None:
    order = av.compare({"S": a}, {"S": b})
    encoded = a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    assert order == (encoded[0] > encoded[1]) - (encoded[0] < encoded[1])


@given(st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-10**9, max_value=10**9),
       st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-10**9, max_value=10**9))
def test_numbers_compare_numerically(a: Decimal, b: Decimal) -> None:
    order = av.compare(av.normalize({"N": str(a)}), av.normalize({"N": str(b)}))
    assert order == (a > b) - (a < b)


def test_expressions_are_parsed_once_and_keep_their_placeholders() -> None:
    text = "attribute_not_exists(#p) AND n BETWEEN :lo AND :hi"
    parsed = ex.parse("condition", "ConditionExpression", text)
    assert parsed is ex.parse("condition", "ConditionExpression", text)
    assert parsed.names == {"#p"} and parsed.values == {":lo", ":hi"}


@pytest.mark.parametrize(("grammar", "text", "message"), [
    ("condition", "a = ", "Syntax error"),
    ("condition", "a = :x OR b = :y", "Syntax error"),
    ("condition", "status = :s", "reserved keyword; reserved keyword: status"),
    ("condition", "nope(a)", "Invalid function name; function: nope"),
    ("condition", "if_not_exists(a, :v)", "Invalid function name; function: if_not_exists"),
    ("condition", "attribute_exists(a, b)", "Incorrect number of operands"),
    ("condition", "attribute_exists(a) = :v", "not allowed to be used this way"),
    ("update", "SET a = :v SET b = :v", 'The "SET" section can only be used once'),
    ("update", "SET a = attribute_exists(b)", "Invalid function name"),
    ("update", "DELETE s :v", "Syntax error"),
])
def test_expression_errors(grammar: str, text: str, message: str) -> None:
    with pytest.raises(ValidationException) as raised:
        ex.parse(grammar, "ConditionExpression" if grammar == "condition" else "UpdateExpression", text)
    assert message in raised.value.message


def test_updates_never_change_the_old_item() -> None:
    old = {"pk": {"S": "k"}, "n": {"N": "1"}, "l": {"L": [{"N": "1"}]}, "gone": {"S": "x"}}
    parsed = ex.parse("update", "UpdateExpression", "SET l = list_append(l, :two), m = if_not_exists(m, :two), "
                                                    "n = n + :two REMOVE gone ADD c :two")
    bindings = ex.Bindings(None, {":two": {"N": "2"}}, [parsed])
    with pytest.raises(ValidationException):  # list_append of a number
        ex.apply_update(parsed, old, bindings, ("pk",))
    parsed = ex.parse("update", "UpdateExpression", "SET m = if_not_exists(m, :two), n = n + :two REMOVE gone "
                                                    "ADD c :two")
    new = ex.apply_update(parsed, old, bindings, ("pk",))
    assert old == {"pk": {"S": "k"}, "n": {"N": "1"}, "l": {"L": [{"N": "1"}]}, "gone": {"S": "x"}}
    assert new == {"pk": {"S": "k"}, "n": {"N": "3"}, "l": {"L": [{"N": "1"}]}, "m": {"N": "2"}, "c": {"N": "2"}}


def test_two_actions_on_one_attribute_are_refused() -> None:
    parsed = ex.parse("update", "UpdateExpression", "SET #a = :v REMOVE a")
    with pytest.raises(ValidationException) as raised:
        ex.Bindings({"#a": "a"}, {":v": {"N": "1"}}, [parsed])
    assert "Two document paths overlap" in raised.value.message
