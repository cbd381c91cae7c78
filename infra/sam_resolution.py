"""SAM CLI's own resolution of `sam deploy`'s arguments: the parameter overrides, stack name and
config env that `sam deploy ARGS` would deploy with, from samconfig.toml and the command line,
printed as JSON. Nothing is deployed: SAM's deploy entry point (`do_cli`, which every option
reaches after click and samconfig are resolved) is replaced by a recorder.

Runs in SAM CLI's own environment, from the directory of template.yaml and samconfig.toml:

    .venv-sam/bin/python infra/sam_resolution.py --config-env prod --parameter-overrides 'K="V"'

(tests/unit/test_deploy.py drives it to show that `maas admin deploy` passes SAM exactly the
parameters that preflight checked.)"""

from __future__ import annotations

import inspect
import json
import os
import sys

os.environ.setdefault("SAM_CLI_TELEMETRY", "0")

import samcli.commands.deploy.command as deploy  # noqa: E402 - after the telemetry switch
from samcli.cli.main import cli  # noqa: E402

recorded: dict[str, object] = {}
names = list(inspect.signature(deploy.do_cli).parameters)


def record(*args: object, **kwargs: object) -> None:
    recorded.update(dict(zip(names, args, strict=False)), **kwargs)


deploy.do_cli = record
try:
    cli.main(args=["deploy", *sys.argv[1:]], prog_name="sam", standalone_mode=False)
except SystemExit as exit_:
    if exit_.code:
        raise
if not recorded:
    sys.exit("sam deploy did not reach its deploy step (see its output above)")
print(json.dumps({key: recorded.get(key) for key in ("parameter_overrides", "stack_name", "config_env", "region")},
                 default=str))
