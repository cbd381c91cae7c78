"""The Powertools resolver every function uses, and the small request helpers routes share
(the container, the caller, the body, the query, the request id).

One middleware wraps every request, matched or not: it hands the routes the function's
container, renders any error through the one mapping (``error_response``) and puts
``x-request-id`` (API Gateway's request id, which is also the id the usage ledger keeps) on
every response."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, TypeVar, cast

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import BaseRouter, Router
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydantic import BaseModel, ValidationError

from gateway.adapters.outages import is_outage
from gateway.domain.scopes import Scope
from gateway.errors import Error, InvalidRequestError, NotFoundError, PayloadTooLargeError, ServiceUnavailableError
from gateway.http.auth import credential_from
from gateway.http.responses import error_response
from gateway.telemetry import logger

if TYPE_CHECKING:
    from gateway.services.auth import Principal
    from gateway.wiring import Container

M = TypeVar("M", bound=BaseModel)


def build_resolver(container: Container, *routers: Router) -> APIGatewayRestResolver:
    app = APIGatewayRestResolver()

    def per_request(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response:
        request_id = app.current_event.request_context.request_id
        app.append_context(container=container)
        try:
            response = next_middleware(app)
        except Error as error:
            response = error_response(error)
        except Exception as error:
            if is_outage(error):  # a store the request needs is down: 503 + Retry-After, never a 500
                logger.warning("store unavailable", extra={"error": type(error).__name__})
                response = error_response(ServiceUnavailableError("A store this request needs is unavailable; "
                                                                  "retry shortly."))
            else:  # logged with its traceback; the caller learns nothing of the internals
                logger.exception("unhandled error")
                response = error_response(Error("The server had an error while processing your request."))
        response.headers["x-request-id"] = request_id
        # Every answer carries a caller's data, a secret or an error about them: never cached,
        # never sniffed into something else.
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    app.use([per_request])

    @app.not_found
    def _unknown_route(_: Exception) -> Response:
        # The path is not echoed back: it is the caller's input, and this answer may be HTML-sniffed.
        raise NotFoundError("Unknown route.", code="unknown_route")

    for router in routers:
        app.include_router(router)
    return app


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


def body_size(router: BaseRouter) -> int:
    """The body's length as sent (base64 if API Gateway encoded it), before any parsing."""
    return len(event_of(router).body or "")


def body(router: BaseRouter, model: type[M]) -> M:
    """The request body as ``model``: 413 over the size limit, 400 for anything that is
    not a JSON object of the right shape, with the offending field as ``param``."""
    event = event_of(router)
    raw = event.body
    raw_text = raw or "{}"
    if event.is_base64_encoded and raw:
        try:
            raw_text = base64.b64decode(raw).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequestError("The body is not valid UTF-8 JSON.") from None
    limit = container_of(router).settings.max_body_bytes
    if len(raw_text.encode("utf-8", "surrogatepass")) > limit:
        raise PayloadTooLargeError(f"The body is over {limit} bytes.")
    try:
        document = json.loads(raw_text)
    except (ValueError, RecursionError):
        raise InvalidRequestError("The body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise InvalidRequestError("The body must be a JSON object.")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequestError(f"Invalid '{where}': {first['msg']}", param=where or None) from None
    except RecursionError:
        raise InvalidRequestError("The body is nested too deeply.") from None


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
