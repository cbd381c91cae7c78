"""DynamoDB's expressions, the parts of them the product writes: conditions and filters
(comparisons, BETWEEN, AND, attribute_exists, attribute_not_exists), key conditions (=, <,
<=, >, >=, BETWEEN on the sort key), updates (SET with +, -, if_not_exists, list_append;
REMOVE; ADD of numbers). Paths are top-level attribute names (``name`` or ``#placeholder``).

Parsed with lark (LALR, one small grammar per kind) into frozen nodes cached by their text:
the same strings come back on every request, so each is parsed once. A request's
``ExpressionAttributeNames``/``Values`` are checked against the expressions that use them
(DynamoDB's errors for missing and unused ones) and bound at evaluation time. Anything
else (OR, NOT, IN, size, begins_with, nested paths, DELETE, projections) is a syntax error
or an invalid function, as the brief of this emulator is the product's calls."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any, Union

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedInput, VisitError

from infra.local.dynamodb import values as av
from infra.local.dynamodb.errors import ValidationException
from infra.local.dynamodb.values import AttributeValue, Item

RESERVED_WORDS = frozenset(
    line.strip().upper() for line in FilePath(__file__).with_name("reserved_words.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#"))

_COMMON = r"""
?operand: path | VALUE | call
call: NAME "(" operand ("," operand)* ")"
path: NAME | NAME_REF
NAME: /[A-Za-z_][A-Za-z0-9_]*/
NAME_REF: /#[A-Za-z0-9_]+/
VALUE: /:[A-Za-z0-9_]+/
%import common.WS
%ignore WS
"""
_GRAMMARS = {"condition": r"""
?start: and_
?and_: predicate | and_ _AND predicate -> and_
?predicate: operand COMPARATOR operand -> compare
    | operand _BETWEEN operand _AND operand -> between
    | call
_AND: "AND"i
_BETWEEN: "BETWEEN"i
COMPARATOR: "<>" | "<=" | ">=" | "=" | "<" | ">"
""" + _COMMON, "update": r"""
start: clause+
?clause: _SET set_action ("," set_action)* -> set_clause
    | _REMOVE path ("," path)* -> remove_clause
    | _ADD path VALUE ("," path VALUE)* -> add_clause
set_action: path "=" set_value
?set_value: operand | operand SIGN operand -> arithmetic
_SET: "SET"i
_REMOVE: "REMOVE"i
_ADD: "ADD"i
SIGN: "+" | "-"
""" + _COMMON}
_PARSERS = {kind: Lark(grammar, parser="lalr") for kind, grammar in _GRAMMARS.items()}
_PARSE_LOCK = threading.Lock()
_ARITY = {"attribute_exists": 1, "attribute_not_exists": 1, "if_not_exists": 2, "list_append": 2}
_CONDITIONS = ("attribute_exists", "attribute_not_exists")


# -- the nodes -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Path:
    name: str  # an attribute name, or a "#placeholder"


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str  # ":value"


@dataclass(frozen=True, slots=True)
class Call:
    function: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True, slots=True)
class Between:
    subject: Any
    low: Any
    high: Any


@dataclass(frozen=True, slots=True)
class And:
    left: Any
    right: Any


@dataclass(frozen=True, slots=True)
class Arithmetic:
    op: str  # "+" or "-"
    left: Any
    right: Any


Node = Union[Path, Placeholder, Call, Compare, Between, And, Arithmetic]  # noqa: UP007


@dataclass(frozen=True, slots=True)
class Update:
    set: tuple[tuple[Path, Any], ...] = ()
    remove: tuple[Path, ...] = ()
    add: tuple[tuple[Path, Placeholder], ...] = ()

    def paths(self) -> list[Path]:
        return [p for p, _ in self.set] + list(self.remove) + [p for p, _ in self.add]


@dataclass(frozen=True, slots=True)
class Parsed:
    """One expression: its kind (the request parameter, as DynamoDB's errors name it), its
    tree, and the placeholders it uses."""

    kind: str
    tree: Any
    names: frozenset[str]
    values: frozenset[str]


class _Build(Transformer):
    """Lark tree -> nodes, with DynamoDB's checks that need only the expression's text."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def fail(self, message: str) -> ValidationException:
        return ValidationException(f"Invalid {self.kind}: {message}")

    def path(self, tokens: list[Token]) -> Path:
        token = tokens[0]
        if token.type == "NAME" and token.upper() in RESERVED_WORDS:
            raise self.fail(f"Attribute name is a reserved keyword; reserved keyword: {token}")
        return Path(str(token))

    def VALUE(self, token: Token) -> Placeholder:  # noqa: N802 - lark names callbacks after terminals
        return Placeholder(str(token))

    def call(self, children: list[Any]) -> Call:
        name, args = str(children[0]), tuple(children[1:])
        if name not in _ARITY or (name in _CONDITIONS) == (self.kind == "UpdateExpression"):
            raise self.fail(f"Invalid function name; function: {name}")
        if len(args) != _ARITY[name]:
            raise self.fail(f"Incorrect number of operands for operator or function; operator or function: {name}, "
                            f"number of operands: {len(args)}")
        if name != "list_append" and not isinstance(args[0], Path):
            raise self.fail(f"Operator or function requires a document path; operator or function: {name}")
        return Call(name, args)

    def compare(self, c: list[Any]) -> Compare:
        return Compare(str(c[1]), self.operand(c[0]), self.operand(c[2]))

    def between(self, c: list[Any]) -> Between:
        return Between(self.operand(c[0]), self.operand(c[1]), self.operand(c[2]))

    def and_(self, c: list[Any]) -> And:
        return And(self.condition(c[0]), self.condition(c[1]))

    def operand(self, node: Any) -> Any:
        if isinstance(node, Call):
            raise self.fail(f"The function is not allowed to be used this way in an expression; function: "
                            f"{node.function}")
        return node

    def condition(self, node: Any) -> Any:
        if isinstance(node, (Path, Placeholder)):
            raise self.fail("Syntax error; token: <EOF>, near: the end of the expression")
        return node

    def set_action(self, c: list[Any]) -> tuple[Path, Any]:
        return (c[0], c[1])

    def arithmetic(self, c: list[Any]) -> Arithmetic:
        return Arithmetic(str(c[1]), c[0], c[2])

    def set_clause(self, c: list[Any]) -> tuple[str, list[Any]]:
        return ("SET", c)

    def remove_clause(self, c: list[Any]) -> tuple[str, list[Any]]:
        return ("REMOVE", c)

    def add_clause(self, c: list[Any]) -> tuple[str, list[Any]]:
        return ("ADD", list(zip(c[::2], c[1::2], strict=True)))


def _walk(node: Any) -> Any:
    yield node
    if isinstance(node, (tuple, list)):
        for child in node:
            yield from _walk(child)
    elif hasattr(node, "__slots__"):
        for slot in node.__slots__:
            yield from _walk(getattr(node, slot))


@functools.lru_cache(maxsize=4096)
def parse(grammar: str, kind: str, text: str) -> Parsed:
    """One expression of ``grammar`` ("condition" or "update"); ``kind`` is the request
    parameter it came in (ConditionExpression, FilterExpression, ...)."""
    if not text.strip():
        raise ValidationException(f"Invalid {kind}: The expression can not be empty;")
    try:
        with _PARSE_LOCK:
            tree = _PARSERS[grammar].parse(text)
        built = _Build(kind).transform(tree)
    except UnexpectedInput as error:
        near = text[max(0, error.pos_in_stream - 8): error.pos_in_stream + 8] if error.pos_in_stream else text[:16]
        raise ValidationException(f'Invalid {kind}: Syntax error; near: "{near}"') from None
    except VisitError as error:
        if isinstance(error.orig_exc, ValidationException):
            raise error.orig_exc from None
        raise
    if grammar == "condition":
        built = _Build(kind).condition(built)
    else:
        sections: dict[str, list[Any]] = {}
        for name, actions in built.children:
            if name in sections:
                raise ValidationException(f'Invalid {kind}: The "{name}" section can only be used once in an update '
                                          "expression;")
            sections[name] = actions
        built = Update(*(tuple(sections.get(name, ())) for name in ("SET", "REMOVE", "ADD")))
    nodes = list(_walk(built))
    return Parsed(kind, built, frozenset(n.name for n in nodes if isinstance(n, Path) and n.name.startswith("#")),
                  frozenset(n.name for n in nodes if isinstance(n, Placeholder)))


# -- binding names and values ----------------------------------------------------------------
class Bindings:
    """A request's ExpressionAttributeNames and -Values, checked against its expressions."""

    def __init__(self, names: Any, values: Any, expressions: list[Parsed]) -> None:
        for given, what in ((names, "ExpressionAttributeNames"), (values, "ExpressionAttributeValues")):
            if given is not None and not given:
                raise ValidationException(f"{what} must not be empty")
            if given and not expressions:
                raise ValidationException(f"{what} can only be specified when using expressions")
        names, values = dict(names or {}), dict(values or {})
        for parsed in expressions:
            for name in sorted(parsed.names - set(names)):
                raise ValidationException(f"Invalid {parsed.kind}: An expression attribute name used in the document "
                                          f"path is not defined; attribute name: {name}")
            for value in sorted(parsed.values - set(values)):
                raise ValidationException(f"Invalid {parsed.kind}: An expression attribute value used in expression "
                                          f"is not defined; attribute value: {value}")
        for given, what, used in ((names, "Names", {n for p in expressions for n in p.names}),
                                  (values, "Values", {v for p in expressions for v in p.values})):
            if unused := sorted(set(given) - used):
                raise ValidationException(f"Value provided in ExpressionAttribute{what} unused in expressions: "
                                          f"keys: {{{', '.join(unused)}}}")
        self.names: dict[str, str] = names
        try:
            self.values: dict[str, AttributeValue] = {k: av.normalize(v) for k, v in values.items()}
        except ValidationException as error:
            raise ValidationException(f"ExpressionAttributeValues contains invalid value: {error.message}") from None
        for parsed in expressions:
            if isinstance(parsed.tree, Update):
                self._check_update(parsed)

    def _check_update(self, parsed: Parsed) -> None:
        for _, operand in parsed.tree.add:
            if av.type_of(self.values[operand.name]) != "N":
                raise ValidationException("Invalid UpdateExpression: Incorrect operand type for operator or function; "
                                          "operator: ADD (this local DynamoDB adds numbers only)")
        names = [self.name(p) for p in parsed.tree.paths()]
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise ValidationException(f"Invalid UpdateExpression: Two document paths overlap with each other; must "
                                      f"remove or rewrite one of these paths; path one: [{twice}], path two: [{twice}]")

    def attributes(self, parsed: Parsed) -> set[str]:
        """The attribute names an expression reads or writes."""
        return {self.name(n) for n in _walk(parsed.tree) if isinstance(n, Path)}

    def name(self, path: Path) -> str:
        return self.names[path.name] if path.name.startswith("#") else path.name

    def value(self, operand: Any, item: Item) -> AttributeValue | None:
        if isinstance(operand, Placeholder):
            return self.values[operand.name]
        return item.get(self.name(operand))


# -- evaluating conditions -------------------------------------------------------------------
def holds(node: Any, item: Item, bindings: Bindings) -> bool:
    """Whether ``item`` (empty when absent) satisfies a parsed condition."""
    if isinstance(node, And):
        return holds(node.left, item, bindings) and holds(node.right, item, bindings)
    if isinstance(node, Call):
        exists = bindings.value(node.args[0], item) is not None
        return exists if node.function == "attribute_exists" else not exists
    if isinstance(node, Between):
        subject = bindings.value(node.subject, item)
        above = av.compare(subject, bindings.value(node.low, item))
        below = av.compare(subject, bindings.value(node.high, item))
        return above is not None and below is not None and above >= 0 and below <= 0
    left, right = bindings.value(node.left, item), bindings.value(node.right, item)
    if node.op in ("=", "<>"):
        return av.equal(left, right) == (node.op == "=")
    order = av.compare(left, right)
    return order is not None and {"<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0}[node.op]


def key_range(parsed: Parsed, bindings: Bindings, key: tuple[str, str | None]) -> tuple[str, list[tuple[str, bytes]]]:
    """A KeyConditionExpression checked against the key (hash, range) of the table or index
    queried, as DynamoDB checks it: the partition value, and the sort key's bounds as
    (SQL operator, value)."""
    parts, pending = [], [parsed.tree]
    while pending:
        node = pending.pop()
        if isinstance(node, And):
            pending += [node.right, node.left]
        else:
            parts.append(node)
    conditions: dict[str, Any] = {}
    for part in parts:
        subject = part.subject if isinstance(part, Between) else part.left if isinstance(part, Compare) else None
        operands = [part.low, part.high] if isinstance(part, Between) else [part.right] if subject else []
        if not isinstance(subject, Path) or not all(isinstance(o, Placeholder) for o in operands) or (
                isinstance(part, Compare) and part.op == "<>"):
            raise ValidationException("Invalid KeyConditionExpression: Query key condition not supported")
        name = bindings.name(subject)
        if name not in key or name in conditions:
            raise ValidationException("Query condition missed key schema element" if name not in key else
                                      "KeyConditionExpressions must only contain one condition per key")
        if any(av.type_of(bindings.values[o.name]) != "S" for o in operands):
            raise ValidationException("One or more parameter values were invalid: Condition parameter type does not "
                                      "match schema type")
        conditions[name] = (part, [bindings.values[o.name]["S"].encode() for o in operands])
    if key[0] not in conditions or not isinstance(conditions[key[0]][0], Compare) or conditions[key[0]][0].op != "=":
        raise ValidationException(f"Query condition missed key schema element: {key[0]}" if key[0] not in conditions
                                  else "Query key condition not supported")
    partition = bindings.values[conditions.pop(key[0])[0].right.name]["S"]
    bounds: list[tuple[str, Any]] = []
    for part, operands in conditions.values():
        if isinstance(part, Between):
            if operands[0] > operands[1]:
                raise ValidationException("Invalid KeyConditionExpression: The BETWEEN operator requires upper bound "
                                          "to be greater than or equal to lower bound")
            bounds = [(">=", operands[0]), ("<=", operands[1])]
        else:
            bounds = [(">=", operands[0]), ("<=", operands[0])] if part.op == "=" else [(part.op, operands[0])]
    return partition, bounds


# -- applying updates ------------------------------------------------------------------------
_BAD_OPERAND = "An operand in the update expression has an incorrect data type"


def apply_update(parsed: Parsed, item: Item, bindings: Bindings, key_names: tuple[str | None, ...]) -> Item:
    """The item after an update: every value is computed from the item as it was, then the
    actions are applied, as DynamoDB does."""
    plan: Update = parsed.tree
    for path in plan.paths():
        if bindings.name(path) in key_names:
            raise ValidationException(f"One or more parameter values were invalid: Cannot update attribute "
                                      f"{bindings.name(path)}. This attribute is part of the key")
    new = dict(item)
    for path, value in plan.set:
        new[bindings.name(path)] = _set_value(value, item, bindings)
    for path in plan.remove:
        new.pop(bindings.name(path), None)
    for path, operand in plan.add:
        current, addend = item.get(bindings.name(path)), bindings.values[operand.name]
        if current is not None and av.type_of(current) != "N":
            raise ValidationException(_BAD_OPERAND)
        new[bindings.name(path)] = addend if current is None else {"N": av.arithmetic("+", current["N"], addend["N"])}
    return new


def _set_value(node: Any, item: Item, bindings: Bindings) -> AttributeValue:
    if isinstance(node, Arithmetic):
        left, right = _set_value(node.left, item, bindings), _set_value(node.right, item, bindings)
        if av.type_of(left) != "N" or av.type_of(right) != "N":
            raise ValidationException(_BAD_OPERAND)
        return {"N": av.arithmetic(node.op, left["N"], right["N"])}
    if isinstance(node, Call) and node.function == "if_not_exists":
        existing = bindings.value(node.args[0], item)
        return existing if existing is not None else _set_value(node.args[1], item, bindings)
    if isinstance(node, Call):  # list_append
        first, second = _set_value(node.args[0], item, bindings), _set_value(node.args[1], item, bindings)
        if av.type_of(first) != "L" or av.type_of(second) != "L":
            raise ValidationException(_BAD_OPERAND)
        return {"L": first["L"] + second["L"]}
    value = bindings.value(node, item)
    if value is None:
        raise ValidationException("The provided expression refers to an attribute that does not exist in the item")
    return value
