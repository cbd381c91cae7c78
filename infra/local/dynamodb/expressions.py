"""DynamoDB's expressions: condition and filter, key condition, update and projection.

Parsed with lark (LALR, one small grammar per kind of expression) into frozen AST nodes
that are cached by their text: the same expression strings come back on every request, so
each is parsed once. Placeholders (``#name``, ``:value``) stay in the AST; a request's
``ExpressionAttributeNames``/``Values`` are checked against the expressions that use them
(DynamoDB's errors for missing and unused ones) and bound at evaluation time."""

from __future__ import annotations

import copy
import functools
import threading
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any, Union

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from infra.local.dynamodb import values as av
from infra.local.dynamodb.errors import ValidationException
from infra.local.dynamodb.values import AttributeValue, Item

RESERVED_WORDS = frozenset(
    line.strip().upper()
    for line in (FilePath(__file__).with_name("reserved_words.txt")).read_text().splitlines()
    if line.strip() and not line.startswith("#")
)

_COMMON = r"""
?operand: path | VALUE | call
call: NAME "(" operand ("," operand)* ")"
path: (NAME | NAME_REF) ("." (NAME | NAME_REF) | "[" INDEX "]")*
NAME: /[A-Za-z_][A-Za-z0-9_]*/
NAME_REF: /#[A-Za-z0-9_]+/
VALUE: /:[A-Za-z0-9_]+/
INDEX: /[0-9]+/
%import common.WS
%ignore WS
"""

_CONDITION = r"""
?start: or_
?or_: and_ | or_ _OR and_ -> or_
?and_: not_ | and_ _AND not_ -> and_
?not_: predicate | _NOT not_ -> not_
?predicate: operand
    | operand COMPARATOR operand -> compare
    | operand _BETWEEN operand _AND operand -> between
    | operand _IN "(" operand ("," operand)* ")" -> in_
    | "(" or_ ")"
_OR: "OR"i
_AND: "AND"i
_NOT: "NOT"i
_BETWEEN: "BETWEEN"i
_IN: "IN"i
COMPARATOR: "<>" | "<=" | ">=" | "=" | "<" | ">"
""" + _COMMON

_UPDATE = r"""
start: clause+
?clause: _SET set_action ("," set_action)* -> set_clause
    | _REMOVE path ("," path)* -> remove_clause
    | _ADD pair ("," pair)* -> add_clause
    | _DELETE pair ("," pair)* -> delete_clause
set_action: path "=" set_value
?set_value: operand | operand SIGN operand -> arithmetic
pair: path VALUE
_SET: "SET"i
_REMOVE: "REMOVE"i
_ADD: "ADD"i
_DELETE: "DELETE"i
SIGN: "+" | "-"
""" + _COMMON

_PROJECTION = r"""
start: path ("," path)*
""" + _COMMON


# -- the AST ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Path:
    """A document path: names (literal, or ``#placeholder``) and list indexes."""

    elements: tuple[str | int, ...]

    def resolve(self, names: dict[str, str]) -> tuple[str | int, ...]:
        if not names:
            return self.elements  # Bindings made sure no placeholder is left unbound
        return tuple(names[e] if isinstance(e, str) and e.startswith("#") else e for e in self.elements)


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str  # ":value"


@dataclass(frozen=True, slots=True)
class Call:
    function: str
    args: tuple[Operand, ...]


Operand = Union[Path, Placeholder, Call]  # noqa: UP007 - a runtime alias used before 3.12's `type`


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Operand
    right: Operand


@dataclass(frozen=True, slots=True)
class Between:
    subject: Operand
    low: Operand
    high: Operand


@dataclass(frozen=True, slots=True)
class In:
    subject: Operand
    options: tuple[Operand, ...]


@dataclass(frozen=True, slots=True)
class And:
    left: Condition
    right: Condition


@dataclass(frozen=True, slots=True)
class Or:
    left: Condition
    right: Condition


@dataclass(frozen=True, slots=True)
class Not:
    operand: Condition


Condition = Union[Compare, Between, In, And, Or, Not, Call]  # noqa: UP007


@dataclass(frozen=True, slots=True)
class Arithmetic:
    op: str  # "+" or "-"
    left: Operand
    right: Operand


@dataclass(frozen=True, slots=True)
class Update:
    set: tuple[tuple[Path, Operand | Arithmetic], ...] = ()
    remove: tuple[Path, ...] = ()
    add: tuple[tuple[Path, Placeholder], ...] = ()
    delete: tuple[tuple[Path, Placeholder], ...] = ()

    def paths(self) -> list[Path]:
        return ([p for p, _ in self.set] + list(self.remove) + [p for p, _ in self.add]
                + [p for p, _ in self.delete])


@dataclass(frozen=True, slots=True)
class Parsed:
    """One expression: its kind (as DynamoDB names it in errors), tree and placeholders,
    and what the per-request checks look at (found once, when the text is parsed)."""

    kind: str
    tree: Any
    names: frozenset[str]
    values: frozenset[str]
    paths: tuple[Path, ...]
    betweens: tuple[Between, ...]
    type_checks: tuple[Call, ...]  # attribute_type(path, :type)


_CONDITION_FUNCTIONS = {"attribute_exists": 1, "attribute_not_exists": 1, "attribute_type": 2,
                        "begins_with": 2, "contains": 2}
_OPERAND_FUNCTIONS = {"size": 1}
_UPDATE_FUNCTIONS = {"if_not_exists": 2, "list_append": 2}
_PATH_FIRST = {"attribute_exists", "attribute_not_exists", "attribute_type", "size", "if_not_exists"}


class _Build(Transformer):
    """Lark tree -> AST nodes, with DynamoDB's checks that only need the expression text."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def fail(self, message: str) -> ValidationException:
        return ValidationException(f"Invalid {self.kind}: {message}")

    def path(self, tokens: list[Token]) -> Path:
        elements: list[str | int] = []
        for token in tokens:
            if token.type == "INDEX":
                elements.append(int(token))
            else:
                if token.type == "NAME" and token.upper() in RESERVED_WORDS:
                    raise self.fail(f"Attribute name is a reserved keyword; reserved keyword: {token}")
                elements.append(str(token))
        return Path(tuple(elements))

    def VALUE(self, token: Token) -> Placeholder:  # noqa: N802 - lark names callbacks after terminals
        return Placeholder(str(token))

    def call(self, children: list[Any]) -> Call:
        name, args = str(children[0]), tuple(children[1:])
        arity = {**_CONDITION_FUNCTIONS, **_OPERAND_FUNCTIONS, **_UPDATE_FUNCTIONS}.get(name)
        if arity is None:
            raise self.fail(f"Invalid function name; function: {name}")
        if len(args) != arity:
            raise self.fail(f"Incorrect number of operands for operator or function; operator or function: {name}, "
                            f"number of operands: {len(args)}")
        if name in _PATH_FIRST and not isinstance(args[0], Path):
            raise self.fail(f"Operator or function requires a document path; operator or function: {name}")
        return Call(name, args)

    # conditions
    def compare(self, c: list[Any]) -> Compare:
        return Compare(str(c[1]), self.operand(c[0]), self.operand(c[2]))

    def between(self, c: list[Any]) -> Between:
        return Between(self.operand(c[0]), self.operand(c[1]), self.operand(c[2]))

    def in_(self, c: list[Any]) -> In:
        if len(c) > 101:
            raise self.fail("The IN operator is provided with too many operands; number of operands: "
                            f"{len(c) - 1}")
        return In(self.operand(c[0]), tuple(self.operand(o) for o in c[1:]))

    def and_(self, c: list[Any]) -> And:
        return And(self.condition(c[0]), self.condition(c[1]))

    def or_(self, c: list[Any]) -> Or:
        return Or(self.condition(c[0]), self.condition(c[1]))

    def not_(self, c: list[Any]) -> Not:
        return Not(self.condition(c[0]))

    def operand(self, node: Any) -> Operand:
        if isinstance(node, Call) and node.function in _CONDITION_FUNCTIONS:
            raise self.fail(f"The function is not allowed to be used this way in an expression; function: "
                            f"{node.function}")
        if isinstance(node, Call) and node.function in _UPDATE_FUNCTIONS and self.kind != "UpdateExpression":
            raise self.fail(f"The function is not allowed in a {self.kind_words} expression; function: "
                            f"{node.function}")
        return node

    @property
    def kind_words(self) -> str:
        return {"KeyConditionExpression": "key condition"}.get(self.kind, self.kind[:-10].lower())

    def condition(self, node: Any) -> Condition:
        if isinstance(node, Call):
            if node.function in _CONDITION_FUNCTIONS:
                return node
            self.operand(node)
            raise self.fail(f"The function is not allowed to be used this way in an expression; function: "
                            f"{node.function}")
        if isinstance(node, (Path, Placeholder)):
            raise self.fail("Syntax error; token: <EOF>, near: the end of the expression")
        return node

    # update
    def set_action(self, c: list[Any]) -> tuple[Path, Any]:
        value = c[1]
        if not isinstance(value, Arithmetic):
            value = self.update_operand(value)
        return (c[0], value)

    def arithmetic(self, c: list[Any]) -> Arithmetic:
        return Arithmetic(str(c[1]), self.update_operand(c[0]), self.update_operand(c[2]))

    def update_operand(self, node: Any) -> Operand:
        if isinstance(node, Call) and node.function not in _UPDATE_FUNCTIONS:
            raise self.fail(f"The function is not allowed in an update expression; function: {node.function}")
        return node

    def pair(self, c: list[Any]) -> tuple[Path, Placeholder]:
        return (c[0], c[1])

    def set_clause(self, c: list[Any]) -> tuple[str, list[Any]]:
        return ("SET", c)

    def remove_clause(self, c: list[Any]) -> tuple[str, list[Any]]:
        return ("REMOVE", c)

    def add_clause(self, c: list[Any]) -> tuple[str, list[Any]]:
        return ("ADD", c)

    def delete_clause(self, c: list[Any]) -> tuple[str, list[Any]]:
        return ("DELETE", c)


_PARSERS = {
    "condition": Lark(_CONDITION, parser="lalr"),
    "update": Lark(_UPDATE, parser="lalr"),
    "projection": Lark(_PROJECTION, parser="lalr"),
}
_PARSE_LOCK = threading.Lock()


def _walk(node: Any) -> Any:
    yield node
    if isinstance(node, (tuple, list)):
        for child in node:
            yield from _walk(child)
    elif hasattr(node, "__slots__"):
        for slot in node.__slots__:
            yield from _walk(getattr(node, slot))


def _syntax_error(kind: str, text: str, error: UnexpectedInput) -> ValidationException:
    if isinstance(error, UnexpectedEOF) or (isinstance(error, UnexpectedToken) and error.token.type == "$END"):
        token = "<EOF>"
    elif isinstance(error, UnexpectedToken):
        token = str(error.token)
    elif isinstance(error, UnexpectedCharacters):
        token = error.char
    else:
        token = "?"
    position = getattr(error, "pos_in_stream", None) or 0
    near = text[max(0, position - 8): position + 8]
    return ValidationException(f'Invalid {kind}: Syntax error; token: "{token}", near: "{near}"')


@functools.lru_cache(maxsize=4096)
def parse(grammar: str, kind: str, text: str) -> Parsed:
    """One expression of ``grammar`` ("condition", "update" or "projection"); ``kind`` is
    the request parameter it came in (ConditionExpression, FilterExpression, ...)."""
    if not text.strip():
        raise ValidationException(f"Invalid {kind}: The expression can not be empty;")
    try:
        with _PARSE_LOCK:
            tree = _PARSERS[grammar].parse(text)
        built = _Build(kind).transform(tree)
    except UnexpectedInput as error:
        raise _syntax_error(kind, text, error) from None
    except VisitError as error:
        if isinstance(error.orig_exc, ValidationException):
            raise error.orig_exc from None
        raise
    if grammar == "condition":
        built = _Build(kind).condition(built)
    elif grammar == "update":
        built = _update(kind, built.children)
    else:
        built = tuple(built.children)
        _check_overlaps(kind, [p.elements for p in built])
    nodes = list(_walk(built))
    paths = tuple(n for n in nodes if isinstance(n, Path))
    names = frozenset(e for n in paths for e in n.elements if isinstance(e, str) and e.startswith("#"))
    values = frozenset(n.name for n in nodes if isinstance(n, Placeholder))
    return Parsed(kind, built, names, values, paths, tuple(n for n in nodes if isinstance(n, Between)),
                  tuple(n for n in nodes if isinstance(n, Call) and n.function == "attribute_type"))


def _update(kind: str, clauses: list[tuple[str, list[Any]]]) -> Update:
    sections: dict[str, list[Any]] = {}
    for name, actions in clauses:
        if name in sections:
            raise ValidationException(f'Invalid {kind}: The "{name}" section can only be used once in an update '
                                      "expression;")
        sections[name] = actions
    update = Update(set=tuple(sections.get("SET", ())), remove=tuple(sections.get("REMOVE", ())),
                    add=tuple(sections.get("ADD", ())), delete=tuple(sections.get("DELETE", ())))
    _check_overlaps(kind, [p.elements for p in update.paths()])
    return update


def _check_overlaps(kind: str, paths: list[tuple[str | int, ...]]) -> None:
    """Placeholders are compared by name here, values again once names are bound."""
    for i, one in enumerate(paths):
        for two in paths[i + 1:]:
            if one[: len(two)] == two or two[: len(one)] == one:
                raise ValidationException(
                    f"Invalid {kind}: Two document paths overlap with each other; must remove or rewrite one of "
                    f"these paths; path one: [{', '.join(map(str, one))}], path two: [{', '.join(map(str, two))}]")


def condition(text: str, kind: str = "ConditionExpression") -> Parsed:
    return parse("condition", kind, text)


def update(text: str) -> Parsed:
    return parse("update", "UpdateExpression", text)


def projection(text: str) -> Parsed:
    return parse("projection", "ProjectionExpression", text)


# -- binding names and values ----------------------------------------------------------------
class Bindings:
    """A request's ExpressionAttributeNames and -Values, checked against its expressions."""

    def __init__(self, names: Any, values: Any, expressions: list[Parsed]) -> None:
        if names is not None and not names:
            raise ValidationException("ExpressionAttributeNames must not be empty")
        if values is not None and not values:
            raise ValidationException("ExpressionAttributeValues must not be empty")
        names, values = dict(names or {}), dict(values or {})
        if (names or values) and not expressions:
            which = "ExpressionAttributeNames" if names else "ExpressionAttributeValues"
            raise ValidationException(f"{which} can only be specified when using expressions")
        used_names: set[str] = set()
        used_values: set[str] = set()
        for parsed in expressions:
            for name in sorted(parsed.names):
                if name not in names:
                    raise ValidationException(f"Invalid {parsed.kind}: An expression attribute name used in the "
                                              f"document path is not defined; attribute name: {name}")
            for value in sorted(parsed.values):
                if value not in values:
                    raise ValidationException(f"Invalid {parsed.kind}: An expression attribute value used in "
                                              f"expression is not defined; attribute value: {value}")
            used_names |= parsed.names
            used_values |= parsed.values
        if unused := sorted(set(names) - used_names):
            raise ValidationException(
                f"Value provided in ExpressionAttributeNames unused in expressions: keys: {{{', '.join(unused)}}}")
        if unused := sorted(set(values) - used_values):
            raise ValidationException(
                f"Value provided in ExpressionAttributeValues unused in expressions: keys: {{{', '.join(unused)}}}")
        self.names: dict[str, str] = names
        self.values: dict[str, AttributeValue] = {}
        for key, value in values.items():
            try:
                self.values[key] = av.normalize(value)
            except ValidationException as error:
                raise ValidationException(
                    f"ExpressionAttributeValues contains invalid value: {error.message} for key {key}") from None
        for parsed in expressions:
            self._check(parsed)

    def _check(self, parsed: Parsed) -> None:
        """What DynamoDB checks once names and values are known, before reading any item."""
        for node in parsed.betweens:
            if isinstance(node.low, Placeholder) and isinstance(node.high, Placeholder):
                low, high = self.values[node.low.name], self.values[node.high.name]
                order = av.compare(low, high)
                if order is None and av.type_of(low) != av.type_of(high):
                    raise ValidationException(
                        f"Invalid {parsed.kind}: The BETWEEN operator requires same data type for lower and upper "
                        f"bounds; lower bound operand: AttributeValue: {_show(low)}, upper bound operand: "
                        f"AttributeValue: {_show(high)}")
                if order is not None and order > 0:
                    raise ValidationException(
                        f"Invalid {parsed.kind}: The BETWEEN operator requires upper bound to be greater than or "
                        f"equal to lower bound; lower bound operand: AttributeValue: {_show(low)}, upper bound "
                        f"operand: AttributeValue: {_show(high)}")
        for node in parsed.type_checks:
            if isinstance(node.args[1], Placeholder):
                wanted = self.values[node.args[1].name]
                if av.type_of(wanted) != "S" or wanted["S"] not in av.TYPES:
                    raise ValidationException(
                        f"Invalid {parsed.kind}: Invalid attribute type name found; type: {_show(wanted)}, valid "
                        "types: { B,N,S,BOOL,NULL,SS,NS,BS,L,M }")
        if isinstance(parsed.tree, Update):
            for operator, pairs, allowed in (("ADD", parsed.tree.add, ("N", "SS", "NS", "BS")),
                                             ("DELETE", parsed.tree.delete, ("SS", "NS", "BS"))):
                for _, operand in pairs:
                    kind = av.type_of(self.values[operand.name])
                    if kind not in allowed:
                        raise ValidationException(
                            f"Invalid UpdateExpression: Incorrect operand type for operator or function; operator: "
                            f"{operator}, operand type: {_TYPE_WORDS[kind]}")
        if parsed.names and isinstance(parsed.tree, (Update, tuple)):  # without names, parse() checked this
            paths = parsed.tree.paths() if isinstance(parsed.tree, Update) else list(parsed.tree)
            _check_overlaps(parsed.kind, [p.resolve(self.names) for p in paths])

    def path(self, path: Path) -> tuple[str | int, ...]:
        return path.resolve(self.names)


_TYPE_WORDS = {"S": "STRING", "N": "NUMBER", "B": "BINARY", "BOOL": "BOOLEAN", "NULL": "NULL", "M": "MAP",
               "L": "LIST", "SS": "STRING SET", "NS": "NUMBER SET", "BS": "BINARY SET"}


def _show(value: AttributeValue) -> str:
    kind = av.type_of(value)
    return f"{{{kind}:{value[kind]}}}"


# -- reading paths ---------------------------------------------------------------------------
def get_path(item: Item, elements: tuple[str | int, ...]) -> AttributeValue | None:
    current: Any = {"M": item}
    for element in elements:
        if isinstance(element, int):
            members = current.get("L") if isinstance(current, dict) else None
            if members is None or element >= len(members):
                return None
            current = members[element]
        else:
            members = current.get("M") if isinstance(current, dict) else None
            if members is None or element not in members:
                return None
            current = members[element]
    return current


def project(item: Item, paths: list[tuple[str | int, ...]]) -> Item:
    """The item reduced to ``paths``, nested structure kept (list elements in path order)."""
    result: Item = {}
    for elements in paths:
        value = get_path(item, elements)
        if value is None:
            continue
        container: Any = {"M": result}
        for position, element in enumerate(elements):
            last = position == len(elements) - 1
            if isinstance(element, int):
                members = container["L"]
                if last:
                    members.append(copy.deepcopy(value))
                else:
                    source = get_path(item, elements[: position + 1])
                    child: Any = {av.type_of(source): {} if "M" in source else []}  # type: ignore[arg-type]
                    members.append(child)
                    container = child
            else:
                members = container["M"]
                if last:
                    members[element] = copy.deepcopy(value)
                else:
                    if element not in members:
                        source = get_path(item, elements[: position + 1])
                        members[element] = {av.type_of(source): {} if "M" in source else []}  # type: ignore[arg-type]
                    container = members[element]
    return result


# -- evaluating conditions -------------------------------------------------------------------
def operand_value(operand: Operand, item: Item, bindings: Bindings) -> AttributeValue | None:
    if isinstance(operand, Placeholder):
        return bindings.values[operand.name]
    if isinstance(operand, Path):
        return get_path(item, bindings.path(operand))
    if operand.function == "size":
        value = operand_value(operand.args[0], item, bindings)
        return _size(value)
    raise ValidationException(f"The function is not allowed here; function: {operand.function}")


def _size(value: AttributeValue | None) -> AttributeValue | None:
    if value is None:
        return None
    kind = av.type_of(value)
    if kind == "S":
        return {"N": str(len(value["S"]))}
    if kind == "B":
        return {"N": str(len(av.scalar(value)))}  # type: ignore[arg-type]
    if kind in ("SS", "NS", "BS", "L", "M"):
        return {"N": str(len(value[kind]))}
    return None


def holds(node: Condition, item: Item, bindings: Bindings) -> bool:
    """Whether ``item`` (empty when absent) satisfies a parsed condition."""
    if isinstance(node, And):
        return holds(node.left, item, bindings) and holds(node.right, item, bindings)
    if isinstance(node, Or):
        return holds(node.left, item, bindings) or holds(node.right, item, bindings)
    if isinstance(node, Not):
        return not holds(node.operand, item, bindings)
    if isinstance(node, Compare):
        left, right = operand_value(node.left, item, bindings), operand_value(node.right, item, bindings)
        if node.op == "=":
            return av.equal(left, right)
        if node.op == "<>":
            return not av.equal(left, right)
        order = av.compare(left, right)
        if order is None:
            return False
        return {"<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0}[node.op]
    if isinstance(node, Between):
        subject = operand_value(node.subject, item, bindings)
        low, high = operand_value(node.low, item, bindings), operand_value(node.high, item, bindings)
        above, below = av.compare(subject, low), av.compare(subject, high)
        return above is not None and below is not None and above >= 0 and below <= 0
    if isinstance(node, In):
        subject = operand_value(node.subject, item, bindings)
        return any(av.equal(subject, operand_value(o, item, bindings)) for o in node.options)
    return _function(node, item, bindings)


def _function(call: Call, item: Item, bindings: Bindings) -> bool:
    name = call.function
    first = operand_value(call.args[0], item, bindings)
    if name == "attribute_exists":
        return first is not None
    if name == "attribute_not_exists":
        return first is None
    second = operand_value(call.args[1], item, bindings)
    if first is None or second is None:
        return False
    first_kind, second_kind = av.type_of(first), av.type_of(second)
    if name == "attribute_type":
        return second_kind == "S" and first_kind == second["S"]
    if name == "begins_with":
        if first_kind != second_kind or first_kind not in ("S", "B"):
            return False
        return av.scalar(first).startswith(av.scalar(second))  # type: ignore[union-attr,arg-type]
    # contains
    if first_kind in ("S", "B") and first_kind == second_kind:
        return av.scalar(second) in av.scalar(first)  # type: ignore[operator]
    if av.SET_TYPES.get(first_kind) == second_kind:
        return av.normalize(second)[second_kind] in first[first_kind]
    if first_kind == "L":
        return any(av.equal(member, second) for member in first["L"])
    return False


# -- key conditions --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KeyRange:
    """A Query's key condition: the partition value, and the sort key's operator and operands."""

    partition: AttributeValue
    op: str | None = None  # "=", "<", "<=", ">", ">=", "BETWEEN", "begins_with"
    operands: tuple[AttributeValue, ...] = ()


_FLIPPED = {"=": "=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def key_range(parsed: Parsed, bindings: Bindings, hash_key: tuple[str, str],
              range_key: tuple[str, str] | None) -> KeyRange:
    """Check a KeyConditionExpression against the key schema (name, type) of the table or
    index queried, as DynamoDB does."""
    parts: list[Any] = []
    pending = [parsed.tree]
    while pending:
        node = pending.pop()
        if isinstance(node, And):
            pending += [node.right, node.left]
        elif isinstance(node, (Or, Not, In)):
            operator = {Or: "OR", Not: "NOT", In: "IN"}[type(node)]
            raise ValidationException(f"Invalid operator used in KeyConditionExpression: {operator}")
        else:
            parts.append(node)
    if len(parts) > 2:
        raise ValidationException("KeyConditionExpressions must only contain one condition per key")
    conditions: dict[str, tuple[str, tuple[AttributeValue, ...]]] = {}
    for part in parts:
        name, op, operands = _key_part(part, bindings)
        if name in conditions:
            raise ValidationException("KeyConditionExpressions must only contain one condition per key")
        expected = hash_key if name == hash_key[0] else range_key if range_key and name == range_key[0] else None
        if expected is None:
            raise ValidationException(f"Query condition missed key schema element: "
                                      f"{hash_key[0] if hash_key[0] not in conditions else range_key[0]}")  # type: ignore[index]
        if any(av.type_of(o) != expected[1] for o in operands):
            raise ValidationException("One or more parameter values were invalid: Condition parameter type does not "
                                      "match schema type")
        if name == hash_key[0] and op != "=":
            raise ValidationException("Query key condition not supported")
        if op == "begins_with" and expected[1] == "N":
            raise ValidationException("Invalid KeyConditionExpression: Incorrect operand type for operator or "
                                      "function; operator or function: begins_with, operand type: N")
        conditions[name] = (op, operands)
    if hash_key[0] not in conditions:
        raise ValidationException(f"Query condition missed key schema element: {hash_key[0]}")
    partition = conditions.pop(hash_key[0])[1][0]
    if not conditions:
        return KeyRange(partition)
    op, operands = next(iter(conditions.values()))
    return KeyRange(partition, op, operands)


def _key_part(node: Any, bindings: Bindings) -> tuple[str, str, tuple[AttributeValue, ...]]:
    def attribute(operand: Any) -> str | None:
        if not isinstance(operand, Path):
            return None
        elements = bindings.path(operand)
        if len(elements) != 1:
            raise ValidationException("KeyConditionExpressions cannot have conditions on nested attributes")
        return str(elements[0])

    def value(operand: Any) -> AttributeValue:
        if not isinstance(operand, Placeholder):
            raise ValidationException("Invalid KeyConditionExpression: The key conditions must use values from "
                                      "ExpressionAttributeValues")
        return bindings.values[operand.name]

    if isinstance(node, Compare):
        if node.op == "<>":
            raise ValidationException("Unsupported operator on KeyConditionExpression: operator: <>")
        if (name := attribute(node.left)) is not None:
            return name, node.op, (value(node.right),)
        if (name := attribute(node.right)) is not None:
            return name, _FLIPPED[node.op], (value(node.left),)
    elif isinstance(node, Between) and (name := attribute(node.subject)) is not None:
        return name, "BETWEEN", (value(node.low), value(node.high))
    elif isinstance(node, Call) and node.function == "begins_with" and (name := attribute(node.args[0])) is not None:
        return name, "begins_with", (value(node.args[1]),)
    elif isinstance(node, Call):
        raise ValidationException(f"Invalid KeyConditionExpression: Invalid function name; function: {node.function}")
    raise ValidationException("Invalid KeyConditionExpression: Query key condition not supported")


# -- applying updates ------------------------------------------------------------------------
_BAD_OPERAND = "An operand in the update expression has an incorrect data type"
_BAD_PATH = "The document path provided in the update expression is invalid for update"


def apply_update(parsed: Parsed, item: Item, bindings: Bindings,
                 key_names: tuple[str, ...]) -> tuple[Item, list[tuple[str | int, ...]]]:
    """The item after ``parsed`` (an Update), and the paths it changed. Every value is
    computed from the item as it was, then the actions are applied, as DynamoDB does."""
    plan: Update = parsed.tree
    for path in plan.paths():
        first = bindings.path(path)[0]
        if first in key_names:
            raise ValidationException(f"One or more parameter values were invalid: Cannot update attribute {first}. "
                                      "This attribute is part of the key")
    old = item
    new = dict(item)  # nested values are copied only on the way to a change (_parent_for_write)
    assignments = [(bindings.path(p), _set_value(v, old, bindings)) for p, v in plan.set]
    for elements, value in assignments:
        _assign(new, elements, value)
    removals = sorted((bindings.path(p) for p in plan.remove),
                      key=lambda e: e[-1] if isinstance(e[-1], int) else -1, reverse=True)
    for elements in removals:
        _remove(new, elements)
    for path, operand in plan.add:
        elements, addend = bindings.path(path), bindings.values[operand.name]
        current = get_path(old, elements)
        if current is None:
            _assign(new, elements, addend)
        elif av.type_of(current) == av.type_of(addend) == "N":
            _assign(new, elements, {"N": av.arithmetic("+", current["N"], addend["N"])})
        elif av.type_of(current) == av.type_of(addend) and av.type_of(current) in av.SET_TYPES:
            kind = av.type_of(current)
            _assign(new, elements, {kind: current[kind] + [m for m in addend[kind] if m not in current[kind]]})
        else:
            raise ValidationException(_BAD_OPERAND)
    for path, operand in plan.delete:
        elements, removed = bindings.path(path), bindings.values[operand.name]
        current = get_path(old, elements)
        if current is None:
            continue
        if av.type_of(current) != av.type_of(removed):
            raise ValidationException(_BAD_OPERAND)
        kind = av.type_of(current)
        remaining = [m for m in current[kind] if m not in removed[kind]]
        if remaining:
            _assign(new, elements, {kind: remaining})
        else:
            _remove(new, elements)
    return new, [bindings.path(p) for p in plan.paths()]


def _set_value(node: Any, item: Item, bindings: Bindings) -> AttributeValue:
    if isinstance(node, Arithmetic):
        left, right = _set_value(node.left, item, bindings), _set_value(node.right, item, bindings)
        if av.type_of(left) != "N" or av.type_of(right) != "N":
            raise ValidationException(_BAD_OPERAND)
        return {"N": av.arithmetic(node.op, left["N"], right["N"])}
    if isinstance(node, Call):
        if node.function == "if_not_exists":
            existing = get_path(item, bindings.path(node.args[0]))
            return existing if existing is not None else _set_value(node.args[1], item, bindings)
        first, second = _set_value(node.args[0], item, bindings), _set_value(node.args[1], item, bindings)
        if av.type_of(first) != "L" or av.type_of(second) != "L":
            raise ValidationException(_BAD_OPERAND)
        return {"L": first["L"] + second["L"]}
    value = operand_value(node, item, bindings)
    if value is None:
        raise ValidationException("The provided expression refers to an attribute that does not exist in the item")
    return value


def _container_copy(value: AttributeValue | None) -> AttributeValue:
    if value is not None and "M" in value:
        return {"M": dict(value["M"])}
    if value is not None and "L" in value:
        return {"L": list(value["L"])}
    raise ValidationException(_BAD_PATH)


def _parent_for_write(item: Item, elements: tuple[str | int, ...]) -> AttributeValue:
    """The map or list holding ``elements[-1]``, copied along the way from the top: the
    item's nested values are shared with the old item, so they are never changed in place."""
    first = elements[0]
    current = item[first] = _container_copy(item.get(first))  # type: ignore[index,arg-type]
    for element in elements[1:-1]:
        if isinstance(element, int):
            members = current.get("L")
            if members is None or element >= len(members):
                raise ValidationException(_BAD_PATH)
            current = members[element] = _container_copy(members[element])
        else:
            members = current.get("M")
            if members is None or element not in members:
                raise ValidationException(_BAD_PATH)
            current = members[element] = _container_copy(members[element])
    return current


def _assign(item: Item, elements: tuple[str | int, ...], value: AttributeValue) -> None:
    if len(elements) == 1:
        item[elements[0]] = value  # type: ignore[index]
        return
    parent, last = _parent_for_write(item, elements), elements[-1]
    if isinstance(last, int):
        if "L" not in parent:
            raise ValidationException(_BAD_PATH)
        if last < len(parent["L"]):
            parent["L"][last] = value
        else:
            parent["L"].append(value)
    else:
        if "M" not in parent:
            raise ValidationException(_BAD_PATH)
        parent["M"][last] = value


def _remove(item: Item, elements: tuple[str | int, ...]) -> None:
    if len(elements) == 1:
        item.pop(elements[0], None)  # type: ignore[call-overload]
        return
    if get_path(item, elements[:-1]) is None:
        return  # nothing there to remove
    parent, last = _parent_for_write(item, elements), elements[-1]
    if isinstance(last, int) and "L" in parent:
        if last < len(parent["L"]):
            del parent["L"][last]
    elif isinstance(last, str) and "M" in parent:
        parent["M"].pop(last, None)
    else:
        raise ValidationException(_BAD_PATH)
