"""The Powertools resolver every function uses, and the small request helpers routes share
(the container, the caller, the body, the query, the request id).

One middleware wraps every request, matched or not: it hands the routes the function's
container and answers through ``guarded`` (gateway/http/responses.py: the one error mapping,
``x-request-id``, which is API Gateway's request id and the id the usage ledger keeps, and the
headers every answer carries), as the thin POST /v1/embeddings path does."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar, cast

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import BaseRouter, Router
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydantic import BaseModel

from gateway.domain.scopes import Scope
from gateway.errors import InvalidRequestError, NotFoundError
from gateway.http.auth import credential_from
from gateway.http.request_body import parse_body
from gateway.http.responses import Answer, guarded

if TYPE_CHECKING:
    from gateway.services.auth import Principal
    from gateway.wiring import Container

M = TypeVar("M", bound=BaseModel)


def build_resolver(container: Container, *routers: Router) -> APIGatewayRestResolver:
    app = APIGatewayRestResolver()

    def per_request(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response:
        app.append_context(container=container)
        return as_response(guarded(app.current_event.request_context.request_id, lambda: next_middleware(app)))

    app.use([per_request])

    @app.not_found
    def _unknown_route(_: Exception) -> Response:
        # The path is not echoed back: it is the caller's input, and this answer may be HTML-sniffed.
        raise NotFoundError("Unknown route.", code="unknown_route")

    for router in routers:
        app.include_router(router)
    return app


def as_response(answer: Response | Answer) -> Response:
    """A shared answer as the Response the resolver returns (headers as they are, Content-Type
    among them)."""
    if isinstance(answer, Answer):
        return Response(status_code=answer.status_code, body=answer.body, headers=answer.headers)
    return answer


def container_of(router: BaseRouter) -> Container:
    return cast("Container", router.context["container"])


def event_of(router: BaseRouter) -> APIGatewayProxyEvent:
    """The current REST proxy event (every function here sits behind API Gateway's REST API)."""
    return cast(APIGatewayProxyEvent, router.current_event)


def request_id(router: BaseRouter) -> str:
    return str(event_of(router).request_context.request_id)


def principal(router: BaseRouter, scope: Scope | None, *, fresh: bool = True) -> Principal:
    """The caller; ``scope`` None: any valid key (GET /v1/me)."""
    event = event_of(router)
    credential = credential_from(event.headers, event.multi_value_headers)
    return container_of(router).authenticator.authenticate(credential, scope, fresh=fresh)


def metered_caller(router: BaseRouter, scope: Scope | None) -> Principal:
    """The caller of a tenant read route: the key record from the cache, then the request gate
    (the key's state in Redis, one request from the tenant's request bucket: 401, 403 or 429).
    With Redis unreachable the records are read fresh instead: revocation still bites."""
    caller = principal(router, scope, fresh=False)
    if container_of(router).gate.count(caller, request_id(router)) is None:
        caller = principal(router, scope, fresh=True)
    return caller


def body(router: BaseRouter, model: type[M]) -> M:
    """The request body as ``model`` (``parse_body``: 413 over the size limit, 400 otherwise)."""
    event = event_of(router)
    return parse_body(event.body, bool(event.is_base64_encoded), model, container_of(router).settings.max_body_bytes)


def header(router: BaseRouter, name: str) -> str | None:
    """One request header (case-insensitive); sent twice with different values is a 400."""
    event = event_of(router)
    values = {v for k, vs in (event.multi_value_headers or {}).items() if k.lower() == name.lower() for v in vs}
    values |= {v for k, v in (event.headers or {}).items() if k.lower() == name.lower()}
    if len(values) > 1:
        raise InvalidRequestError(f"'{name}' is given more than once.", param=name)
    return values.pop().strip() if values else None


def query(router: BaseRouter, name: str, *, max_length: int = 512) -> str | None:
    event = event_of(router)
    values = (event.multi_value_query_string_parameters or {}).get(name)
    if values and len(set(values)) > 1:
        raise InvalidRequestError(f"'{name}' is given more than once.", param=name)
    value = event.get_query_string_value(name)
    if value is not None and len(value) > max_length:
        raise InvalidRequestError(f"'{name}' is too long.", param=name)
    return value
