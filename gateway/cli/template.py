"""Reading template.yaml: a YAML loader that accepts CloudFormation's short tags
(!Ref, !Sub, !GetAtt, !If ...) as plain {"Fn::...": ...} mappings.

Here, under the CLI, because ``maas admin preflight`` reads the template it checks, and the
local stack and the tests (infra/local/template.py) read it with this same loader: both import
it downward. PyYAML is no dependency of the gateway's Lambda layer, so it is imported only when
a template is read (never by a handler)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any


@cache
def _loader() -> type:
    """A SafeLoader subclass that turns every ``!Tag`` into its long form (built on first use)."""
    try:
        import yaml
    except ImportError as error:  # the layer's dependencies only: reading a template needs the dev extras
        raise SystemExit("maas: reading a CloudFormation template needs PyYAML (pip install pyyaml)") from error

    class CfnLoader(yaml.SafeLoader):
        pass

    def cfn_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
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

    CfnLoader.add_multi_constructor("!", cfn_tag)
    return CfnLoader


def load_template(path: str | Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM template; intrinsic functions become their long JSON form."""
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.load(f, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a CloudFormation template")
    return data
