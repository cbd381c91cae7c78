"""Finance API (scope finance): usage, the request-level ledger, invoices (JSON or CSV), and
the month's reconciliation status.

CSV responses are ``text/csv`` with a header row and CRLF line ends; where a JSON answer
would carry ``next_cursor`` the CSV one carries it in the ``x-next-cursor`` header."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from gateway.domain.scopes import Scope
from gateway.errors import InvalidRequestError
from gateway.http.resolver import container_of, principal, query
from gateway.http.responses import json_response, list_body
from gateway.services.reports import EVENT_COLUMNS, INVOICE_COLUMNS, USAGE_COLUMNS, to_csv

router = Router()


def _format() -> str:
    value = query(router, "format") or "json"
    if value not in ("json", "csv"):
        raise InvalidRequestError("'format' is json or csv.", param="format")
    return value


def _csv(text: str, filename: str, next_cursor: str | None = None) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if next_cursor:
        headers["x-next-cursor"] = next_cursor
    return Response(status_code=200, content_type="text/csv; charset=utf-8", body=text, headers=headers)


@router.get("/billing/usage")
def usage() -> Response:
    principal(router, Scope.FINANCE)
    output = _format()
    start, end = query(router, "start"), query(router, "end")
    rows = container_of(router).reports.usage(start=start, end=end, tenant_id=query(router, "tenant_id"),
                                     group_by=query(router, "group_by"))
    if output == "csv":
        return _csv(to_csv(rows, USAGE_COLUMNS), f"usage_{start}_{end}.csv")
    return json_response(list_body(rows))


@router.get("/billing/usage/events")
def usage_events() -> Response:
    principal(router, Scope.FINANCE)
    output = _format()
    rows, cursor = container_of(router).reports.events(
        tenant_id=query(router, "tenant_id"), start=query(router, "start"), end=query(router, "end"),
        cursor=query(router, "cursor", max_length=2048), limit=query(router, "limit"))
    if output == "csv":
        return _csv(to_csv(rows, EVENT_COLUMNS), "usage_events.csv", cursor)
    return json_response(list_body(rows, cursor))


@router.get("/billing/reconcile")
def reconciliation() -> Response:
    principal(router, Scope.FINANCE)
    return json_response(container_of(router).reports.reconciliation(query(router, "month")))


@router.get("/billing/invoices")
def invoices() -> Response:
    principal(router, Scope.FINANCE)
    output = _format()
    invoice = container_of(router).reports.invoices(month=query(router, "month"))
    if output == "csv":
        return _csv(to_csv(invoice["lines"], INVOICE_COLUMNS), f"invoice_{invoice['month']}.csv")
    return json_response(list_body(invoice["lines"], month=invoice["month"], subtotals=invoice["subtotals"],
                                   totals=invoice["totals"]))
