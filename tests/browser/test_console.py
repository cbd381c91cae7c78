"""The web console (CONTRACT §9) in chromium against the running local stack: sign-in by the
names the contract keeps ("API key", "Sign in"), the admin's tenant and key lifecycle ("Create
tenant", "Create key", "Revoke"), a tenant that sees only its own usage, finance's CSV
("Download CSV") equal to the API's bytes, the XSS case, sign-out, keyboard use, and
screenshots of every view (1280x800, one at phone width) under .maas/screenshots/.

Each test's `console` fixture also checks that no request left the origin, no console
error and no dialog happened (tests/browser/conftest.py)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import DESKTOP, PHONE, create_key, create_tenant, spend, wait_for_tokens
from tests.e2e.conftest import Api

# pytest-xdist (make test): on the load tests' worker, so they never share the machine with
# this package's stack and browser (tests/conftest.py, pytest_xdist_make_scheduler).
pytestmark = pytest.mark.xdist_group("heavy")

KEY_TEXT = re.compile(r"maas_[0-9A-Za-z]{16}_[0-9A-Za-z]{38}")
XSS_NAME = "<img src=x onerror=alert(1)>"


def month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def month_range() -> tuple[str, str]:
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    return f"{month()}-01", today


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def usage(stack, admin) -> dict:
    """Two tenants with charged requests (and the XSS-named one with one), in the reports."""
    start, end = month_range()
    tenants = {}
    for label, texts in (("globex", ["hello world", "the quick brown fox jumps over the lazy dog"]),
                         ("initech", ["a", "b", "c"]),
                         ("xss", ["x"])):
        tenant = create_tenant(admin, XSS_NAME if label == "xss" else unique(label))
        key = create_key(admin, tenant["id"])
        tenants[label] = tenant | {"key": key, "tokens": spend(stack, key, texts)}
    for tenant in tenants.values():
        wait_for_tokens(admin, tenant["id"], tenant["tokens"], start, end)
    return tenants


# ------------------------------------------------------------------------------ admin


def test_admin_creates_a_tenant_and_a_key_sees_the_secret_once_and_revokes_it(console, stack, admin):
    page = console.open().page
    console.screenshot("sign-in")
    console.sign_in(stack.admin_key)
    name = unique("acme")

    # WHEN the admin creates a tenant
    page.get_by_label("Tenant name").fill(name)
    page.get_by_role("button", name="Create tenant").click()
    # THEN its page opens, and it is in the list
    page.get_by_role("heading", level=2, name=name).wait_for()
    page.get_by_role("link", name=name).wait_for()

    # WHEN it creates a key THEN the secret is shown once, and it works
    page.get_by_label("Key name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-secret").text_content()
    assert KEY_TEXT.fullmatch(secret)
    assert Api(stack.api_url, secret).get("/v1/me").json()["tenant_name"] == name
    page.get_by_role("button", name="Copy key").wait_for()
    console.screenshot("admin-tenant-new-key")
    assert secret not in str(console.session_storage()) and secret not in page.url
    page.get_by_role("button", name="Done, I stored it").click()
    assert secret not in page.content()  # gone for good

    # WHEN it revokes the key (with confirmation) THEN the key stops working at once
    row = page.get_by_role("row").filter(has_text="laptop")
    row.get_by_role("button", name="Revoke").click()
    dialog = page.get_by_role("dialog")
    assert "stops working immediately" in dialog.text_content()
    console.screenshot("admin-revoke-confirm", full_page=False)
    page.get_by_role("button", name="Revoke").click()  # the page behind the dialog is inert
    row.get_by_text("revoked").wait_for()
    assert row.get_by_role("button", name="Revoke").count() == 0
    assert Api(stack.api_url, secret).get("/v1/me").status_code == 401


def test_admin_rotates_a_key_sets_limits_and_suspends_a_tenant(console, stack, admin):
    tenant = create_tenant(admin, unique("umbrella"))
    key = create_key(admin, tenant["id"], name="svc")
    page = console.open().sign_in(stack.admin_key).page
    page.get_by_role("link", name=tenant["name"]).click()
    page.get_by_role("heading", level=2, name=tenant["name"]).wait_for()

    # WHEN the key is rotated with a grace period THEN the new secret is shown once, and both
    # keys work until the grace ends
    page.get_by_role("row").filter(has_text="svc").get_by_role("button", name="Rotate").click()
    page.get_by_role("dialog").get_by_label("Grace period for the old key").select_option("3600")
    page.get_by_role("dialog").get_by_role("button", name="Rotate key").click()
    successor = page.locator("#new-secret").text_content()
    assert KEY_TEXT.fullmatch(successor) and successor != key
    assert Api(stack.api_url, successor).get("/v1/me").status_code == 200
    assert Api(stack.api_url, key).get("/v1/me").status_code == 200
    page.get_by_text("→ key_").wait_for()  # the old key points at its successor

    # WHEN a limit is overridden THEN the tenant has it
    page.get_by_label("Requests per minute").fill("42")
    page.get_by_role("button", name="Save plan and limits").click()
    page.get_by_text("Plan and limits saved.").wait_for()  # the API answered
    page.get_by_role("heading", level=2, name=tenant["name"]).wait_for()
    expect(page.get_by_label("Requests per minute")).to_have_value("42")  # drawn anew from the API
    assert admin.get(f"/billing/tenants/{tenant['id']}").json()["limits"]["requests_per_minute"] == 42

    # WHEN it is suspended (with confirmation) THEN its keys are refused, until reactivated
    page.get_by_role("button", name="Suspend tenant").click()
    page.get_by_role("dialog").get_by_role("button", name="Suspend").click()
    page.get_by_role("button", name="Reactivate tenant").wait_for()
    assert Api(stack.api_url, successor).get("/v1/me").status_code == 403
    page.get_by_role("button", name="Reactivate tenant").click()
    page.get_by_role("dialog").get_by_role("button", name="Reactivate").click()
    page.get_by_role("button", name="Suspend tenant").wait_for()
    assert Api(stack.api_url, successor).get("/v1/me").status_code == 200


def test_a_tenant_named_like_markup_is_shown_as_text(console, stack, admin, usage):
    # GIVEN a tenant named "<img src=x onerror=alert(1)>" (with usage, so finance lists it too)
    page = console.open().sign_in(stack.admin_key).page
    # THEN its name is text everywhere the console shows it, and nothing runs
    page.get_by_role("link", name=XSS_NAME).first.click()
    page.get_by_role("heading", level=2, name=XSS_NAME).wait_for()
    console.screenshot("admin-tenants")
    console.go("Finance")
    console.settled()
    assert page.get_by_text(XSS_NAME).count() >= 1
    assert page.locator("img[src='x']").count() == 0
    # (the fixture asserts that no dialog fired and no console error was logged)


def test_admin_views_audit_log_and_webhooks(console, stack, admin, usage):
    page = console.open().sign_in(stack.admin_key).page
    console.go("Audit log")
    page.get_by_role("cell", name="tenant.create").first.wait_for()
    console.screenshot("admin-audit")
    console.go("Webhooks")
    console.settled()
    console.screenshot("admin-webhooks")


# ------------------------------------------------------------------------------ tenant


def test_a_tenant_sees_only_its_own_usage(console, stack, admin, usage):
    mine, other = usage["globex"], usage["initech"]
    page = console.open().sign_in(mine["key"]).page
    # THEN the usage view: its own tenant, its own numbers, nobody else's
    page.get_by_role("heading", level=1, name="Usage").wait_for()
    console.settled()
    header = page.locator("#who").text_content()
    assert mine["name"] in header
    chart = page.get_by_role("img", name=re.compile("tokens per day"))
    assert f"{mine['tokens']:,} tokens" in chart.get_attribute("aria-label")
    total_row = page.locator("tfoot tr").first
    assert f"{mine['tokens']:,}" in total_row.text_content()
    body = page.locator("main").text_content()
    for trace in (other["id"], other["name"], usage["xss"]["id"]):
        assert trace not in body
    assert "Balance and budget" in body  # shown, or "not available" until GET /v1/balance exists
    console.screenshot("tenant-usage")
    # at a phone's width (reloaded: the session survives a reload, the layout is drawn anew)
    page.set_viewport_size(PHONE)
    page.reload()
    page.get_by_role("heading", level=1, name="Usage").wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # nothing sideways
    console.screenshot("tenant-usage-phone")
    page.set_viewport_size(DESKTOP)

    # its own keys, and only those
    console.go("My keys")
    page.get_by_text("(this key)").wait_for()
    assert other["id"] not in page.locator("main").text_content()
    console.screenshot("tenant-keys")
    # only the views its scopes allow
    nav = page.get_by_role("navigation").text_content()
    assert "Tenants" not in nav and "Finance" not in nav


# ------------------------------------------------------------------------------ finance


def test_finance_downloads_the_apis_own_csv_and_signs_out(console, stack, admin, usage):
    finance_key = create_key(admin, "ten_operators", ["finance"], name="finance-browser")
    finance = Api(stack.api_url, finance_key)
    page = console.open().sign_in(finance_key).page
    page.get_by_role("heading", level=1, name="Finance").wait_for()
    console.settled()
    # the month's usage by tenant: a stacked chart with its summary, the same numbers as a table
    chart = page.get_by_role("img", name=re.compile("tokens by tenant"))
    assert usage["globex"]["name"] in chart.get_attribute("aria-label")
    table = page.get_by_role("table", name=re.compile("Usage by tenant and model"))
    initech_row = table.get_by_role("row").filter(has_text=usage["initech"]["name"])
    assert f"{usage['initech']['tokens']:,}" in initech_row.text_content()
    console.screenshot("finance")

    # WHEN finance downloads the CSV THEN it is the API's own, byte for byte
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    saved = download.value
    expected = finance.get("/billing/invoices", params={"month": month(), "format": "csv"})
    assert expected.status_code == 200
    assert saved.suggested_filename == f"invoice_{month()}.csv"
    with open(saved.path(), "rb") as handle:
        assert handle.read() == expected.content

    # WHEN it signs out THEN nothing of the session is left
    assert console.session_storage()
    console.sign_out()
    assert console.session_storage() == {}
    console.screenshot("signed-out", full_page=False)
    assert page.get_by_role("navigation").count() == 0
    page.reload()
    page.get_by_label("API key").wait_for()  # still signed out after a reload


def test_keyboard_only_sign_in_and_navigation(console, stack):
    page = console.open().page
    page.keyboard.type(stack.admin_key)  # the key field has the focus
    page.keyboard.press("Enter")
    # THEN the focus lands on the first view's heading
    expect(page.get_by_role("heading", level=1, name="Tenants")).to_be_focused()
    # the sections are just before it; Enter follows a link, and the new view's heading gets the focus
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("link", name="Audit log")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1, name="Audit log")).to_be_focused()


def test_a_wrong_key_is_refused_with_a_message(console, stack):
    # GIVEN /console without its slash THEN the browser lands on /console/, with the headers
    page = console.open(f"{stack.api_url}/console").page
    assert page.url == f"{stack.api_url}/console/"
    headers = console.document.all_headers()
    assert headers["content-security-policy"].startswith("default-src 'self'; script-src 'self'; style-src 'self'")
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    assert "access-control-allow-origin" not in headers
    page.get_by_label("API key").fill("maas_notakey")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="not accepted").wait_for()
    assert console.session_storage() == {}
    console.recorder.errors.clear()  # the 401 is the expected answer here


def test_a_key_without_console_scopes_is_told_what_it_can_do(console, stack, admin):
    tenant = create_tenant(admin, unique("hooli"))
    key = create_key(admin, tenant["id"], ["inference"])
    page = console.open().sign_in(key).page
    page.get_by_role("heading", level=1, name="This key").wait_for()
    assert "usage:read" in page.locator("main").text_content()
    console.screenshot("inference-only")


def test_every_view_passes_axe_wcag_aa_checks(console, stack, admin, usage):
    # GIVEN each view with data in it WHEN axe-core checks it (WCAG 2.1 A and AA)
    # THEN nothing serious: labels, names, contrast, table headers, landmarks, dialog
    page = console.open().page
    found = {"sign-in": console.accessibility_violations()}
    console.sign_in(stack.admin_key)
    page.get_by_role("link", name=usage["globex"]["name"]).click()
    page.get_by_role("heading", level=2, name=usage["globex"]["name"]).wait_for()
    found["tenants"] = console.accessibility_violations()
    for section in ("Finance", "Webhooks", "Audit log"):
        console.go(section)
        found[section] = console.accessibility_violations()
    console.sign_out()
    console.sign_in(usage["globex"]["key"])
    page.get_by_role("heading", level=1, name="Usage").wait_for()
    found["usage"] = console.accessibility_violations()
    console.go("My keys")
    found["keys"] = console.accessibility_violations()
    assert {view: v for view, v in found.items() if v} == {}
