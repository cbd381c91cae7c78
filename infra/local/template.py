"""Reading template.yaml for the local stack and the tests: the loader is the CLI's
(gateway/cli/template.py, which ``maas admin preflight`` uses too), with this repository's
template as the default; ``table_definition`` gives a table as create_table takes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.cli.template import load_template as _load_template

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def load_template(path: str | Path = TEMPLATE) -> dict[str, Any]:
    """Parse a CloudFormation/SAM template (this repository's by default); intrinsic functions
    become their long JSON form."""
    return _load_template(path)


def table_definition(name: str = "MaasTable", path: Path = TEMPLATE) -> dict[str, Any]:
    """The key schema and indexes of a table, as create_table takes them."""
    properties = load_template(path)["Resources"][name]["Properties"]
    return {
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        "GlobalSecondaryIndexes": properties.get("GlobalSecondaryIndexes", []),
        "BillingMode": properties.get("BillingMode", "PAY_PER_REQUEST"),
    }
