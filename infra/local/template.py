"""Reading template.yaml: a YAML loader that accepts CloudFormation's short tags
(!Ref, !Sub, !GetAtt, !If ...) as plain {"Fn::...": ...} mappings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that accepts CloudFormation's short-form tags (!Ref, !Sub, !GetAtt, ...)."""


def _cfn_tag(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix in ("Ref", "Condition"):
        return {tag_suffix: value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: str | Path = TEMPLATE) -> dict[str, Any]:
    """Parse a CloudFormation/SAM template; intrinsic functions become their long JSON form."""
    with open(path, encoding="utf-8") as f:
        data = yaml.load(f, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a CloudFormation template")
    return data


def table_definition(name: str = "MaasTable", path: Path = TEMPLATE) -> dict[str, Any]:
    """The key schema and indexes of a table, as create_table takes them."""
    properties = load_template(path)["Resources"][name]["Properties"]
    return {
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        "GlobalSecondaryIndexes": properties.get("GlobalSecondaryIndexes", []),
        "BillingMode": properties.get("BillingMode", "PAY_PER_REQUEST"),
    }
