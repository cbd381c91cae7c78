"""The Powertools resolver every function uses, with the error handlers registered once,
and the small request helpers routes share (credential, body, query, request id)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.api_gateway import BaseRouter
from pydantic import BaseModel, ValidationError

from gateway.config import get_settings
from gateway.domain.scopes import Scope
from gateway.errors import Error, InvalidRequestError, NotFoundError, PayloadTooLargeError
from gateway.http.auth import credential_from
from gateway.http.responses import error_response
from gateway.services.auth import Principal
from gateway.telemetry import logger

M = TypeVar("M", bound=BaseModel)


def build_resolver() -> APIGatewayRestResolver:
    app = APIGatewayRestResolver()

    @app.exception_handler(Error)
    def _domain_error(error: Error):  # type: ignore[no-untyped-def]
        return error_response(error)

    @app.exception_handler(Exception)
    def _unexpected(error: Exception):  # type: ignore[no-untyped-def]
        # Logged with its traceback; the caller learns nothing of the internals.
        logger.exception("unhandled error")
        return error_response(Error("The server had an error while processing your request."))

    @app.not_found
    def _unknown_route(_: Exception):  # type: ignore[no-untyped-def]
        event = app.current_event
        return error_response(NotFoundError(f"Unknown route: {event.http_method} {event.path}",
                                            code="unknown_route"))

    return app


def request_id(router: BaseRouter) -> str:
    return router.current_event.request_context.request_id


def principal(router: BaseRouter, scope: Scope | None, *, fresh: bool = True) -> Principal:
    from gateway.wiring import container

    event = router.current_event
    credential = credential_from(event.headers, event.multi_value_headers)
    return container().authenticator.authenticate(credential, scope, fresh=fresh)


def body(router: BaseRouter, model: type[M]) -> M:
    """The request body as ``model``: 413 over the size limit, 400 for anything that is
    not a JSON object of the right shape, with the offending field as ``param``."""
    raw = router.current_event.body
    raw_text = raw or "{}"
    if router.current_event.is_base64_encoded and raw:
        import base64

        try:
            raw_text = base64.b64decode(raw).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequestError("The body is not valid UTF-8 JSON.") from None
    if len(raw_text.encode("utf-8", "surrogatepass")) > get_settings().max_body_bytes:
        raise PayloadTooLargeError(f"The body is over {get_settings().max_body_bytes} bytes.")
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


def query(router: BaseRouter, name: str, *, max_length: int = 512) -> str | None:
    values = (router.current_event.multi_value_query_string_parameters or {}).get(name)
    if values and len(set(values)) > 1:
        raise InvalidRequestError(f"'{name}' is given more than once.", param=name)
    value = router.current_event.get_query_string_value(name)
    if value is not None and len(value) > max_length:
        raise InvalidRequestError(f"'{name}' is too long.", param=name)
    return value


def any_query(router: BaseRouter) -> dict[str, Any]:
    return dict(router.current_event.query_string_parameters or {})
