"""python -m infra.local.apigw: serve template.yaml's API routes with the real handlers."""

from __future__ import annotations

import argparse
import logging

from infra.local.apigw.app import TEMPLATE, build_app
from infra.local.apigw.pool import DEFAULT_MAX_COPIES
from infra.local.apigw.server import serve

LOG = logging.getLogger("maas.apigw")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.apigw",
        description="Serve template.yaml's API routes with the real handlers (sam local start-api without Docker).",
    )
    parser.add_argument("--template", default=str(TEMPLATE))
    parser.add_argument("--project-root", default=None, help="default: the template's folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--max-copies", type=int, default=DEFAULT_MAX_COPIES)
    parser.add_argument("--stage", default="local")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    app = build_app(args.template, args.project_root, args.max_copies, stage=args.stage)
    for r in app.routes:
        LOG.info("route %-6s %-40s -> %s", r.method, r.resource, r.function_id)
    LOG.info("API Gateway emulator on http://%s:%d", args.host, args.port)
    try:
        serve(app, args.host, args.port)
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
