"""A small API Gateway (REST API, Lambda proxy integration) emulator, for the local stack and
the tests only (never deployed).

What `sam local start-api` does, without Docker: the routes come from the `Api` events of the
`AWS::Serverless::Function` resources in template.yaml, each request becomes the same REST proxy
event API Gateway sends (the samples in events/ have this shape), and the function's real
`handler(event, context)` answers it, in a worker process of its own per function copy.

What API Gateway itself answers is answered here the same way, in OpenAI's error shape (the
template's GatewayResponses): an unknown route or method is 404 `unknown_route`, a body over
10 MiB is 413, a handler that raises or returns a malformed response is 502 "Internal server
error", and a request that is not valid HTTP/1.1 gets its 4xx/5xx in the same shape.

The handlers see this process's environment (the local stack sets it), not the template's.

    routes.py   template.yaml -> functions, routes, binary media types
    proxy.py    request -> proxy event, proxy result -> response, the gateway's own errors (pure)
    pool.py     the Lambda context and each function's pool of copies
    worker.py   one copy: a worker process serving one request at a time
    app.py      Gateway: routing, invoking a copy, build_app(template)
    server.py   the HTTP/1.1 server and ApiGatewayEmulator (what the local stack runs)
"""

from infra.local.apigw.app import MAX_BODY_BYTES, TEMPLATE, Gateway, build_app
from infra.local.apigw.pool import DEFAULT_MAX_COPIES, FunctionPool, LambdaContext
from infra.local.apigw.proxy import Response
from infra.local.apigw.routes import FunctionSpec, Route, read_binary_media_types, read_functions, read_routes
from infra.local.apigw.server import HTTP_METHODS, ApiGatewayEmulator, serve
from infra.local.template import load_template

__all__ = [
    "DEFAULT_MAX_COPIES",
    "HTTP_METHODS",
    "MAX_BODY_BYTES",
    "TEMPLATE",
    "ApiGatewayEmulator",
    "FunctionPool",
    "FunctionSpec",
    "Gateway",
    "LambdaContext",
    "Response",
    "Route",
    "build_app",
    "load_template",
    "read_binary_media_types",
    "read_functions",
    "read_routes",
    "serve",
]
