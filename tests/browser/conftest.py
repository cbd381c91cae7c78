"""The console in a real browser: Playwright driving Debian's chromium (`make test` installs
it; Playwright's own browser download is not reachable here) against the running local stack.

One browser for the package; a fresh context (empty sessionStorage) per test. Every page
records each request URL and each console message: a request to another origin or a console
error fails the test that caused it. Screenshots go to .maas/screenshots/."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from infra.local.apigw import read_routes
from infra.local.services import ROOT, free_port
from infra.local.stack import LocalStack, StackConfig
from infra.local.template import load_template
from tests.e2e.conftest import Api

SCREENSHOTS = ROOT / ".maas" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
MODEL = "all-MiniLM-L6-v2"
ROUTES = read_routes(load_template())
AXE = ROOT / "functions" / "console" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The local stack, as in tests/e2e, but for this package only: it is stopped before the
    e2e layer starts its own, so the load tests there never share the machine with it (under
    pytest-xdist, test_console.py is in the load tests' xdist_group: one after another)."""
    model_dir = ROOT / ".maas" / "model"
    if not (model_dir / "model.onnx").exists():
        pytest.fail("the ONNX model is missing: run `make model` (make test does it)")
    if not (ROOT / "functions" / "console" / "site" / "vendor" / "chart.umd.min.js").exists() or not AXE.exists():
        pytest.fail("the console's libraries are missing: run `make console` (make test does it)")
    config = StackConfig(
        api_port=free_port(), inference_port=free_port(), redis_port=free_port(), dynamodb_port=free_port(),
        files_port=free_port(),
        state_dir=tmp_path_factory.mktemp("maas"), model_dir=model_dir, flush_interval_s=0.5, api_workers=4,
    )
    local = LocalStack(config).start(progress=lambda line: None)
    yield local
    local.stop()


@pytest.fixture(scope="package")
def admin(stack: LocalStack) -> Api:
    return Api(stack.api_url, stack.admin_key)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is missing: `make chromium` installs Debian's package (make test does it)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable)
        yield chromium
        chromium.close()


@dataclass
class Recorder:
    """What one page did: every request URL, the status of every response, console errors
    and dialogs (none may fire)."""

    origin: str
    requests: list[str] = field(default_factory=list)
    responses: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def foreign(self) -> list[str]:
        return [url for url in self.requests if _origin(url) != self.origin]

    def unexpected_errors(self) -> list[str]:
        """Console errors, except a 404 from an endpoint this deployment does not declare in
        template.yaml yet (the console shows those as "not available")."""
        return [text for text, url in self.errors if not (
            text.startswith("Failed to load resource") and self.responses.get(url) == 404 and not _declared(url))]


def _origin(url: str) -> str:
    parts = urlsplit(url[len("blob:"):] if url.startswith("blob:") else url)  # blob: URLs carry their origin
    return f"{parts.scheme}://{parts.netloc}"


def _declared(url: str) -> bool:
    path = urlsplit(url).path
    return any(route.match(path) is not None for route in ROUTES)


class ConsolePage:
    """A browser tab on the console, with the actions every test needs."""

    def __init__(self, page: Any, stack: LocalStack, recorder: Recorder) -> None:
        self.page = page
        self.url = f"{stack.api_url}/console/"
        self.recorder = recorder

    def open(self, url: str | None = None) -> ConsolePage:
        self.document = self.page.goto(url or self.url)
        self.page.get_by_label("API key").wait_for()
        return self

    def sign_in(self, key: str) -> ConsolePage:
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.get_by_role("button", name="Sign out").wait_for()
        return self

    def sign_out(self) -> None:
        self.page.get_by_role("button", name="Sign out").click()
        self.page.get_by_label("API key").wait_for()

    def go(self, section: str) -> None:
        self.page.get_by_role("navigation").get_by_role("link", name=section, exact=True).click()
        self.page.get_by_role("heading", level=1, name=section).wait_for()

    def settled(self) -> None:
        """Every loading state gone (charts drawn, tables filled)."""
        from playwright.sync_api import expect

        # (not wait_for_function: that evaluates a string, which the console's CSP forbids)
        expect(self.page.locator(".state.loading")).to_have_count(0)

    def screenshot(self, name: str, *, full_page: bool = True) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.settled()
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page, animations="disabled")

    def accessibility_violations(self) -> list[str]:
        """axe-core's WCAG 2 A and AA violations of the page as it is now (serious and
        critical ones; axe comes from npm with the console's other libraries, tests only)."""
        self.settled()
        if not self.page.evaluate("typeof window.axe === 'object'"):
            self.page.evaluate(AXE.read_text())
        results = self.page.evaluate(
            "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})")
        assert len(results["passes"]) > 10, "axe ran no rules"
        return [f"{v['id']} ({v['impact']}): {v['help']}: {[n['target'] for n in v['nodes']][:3]}"
                for v in results["violations"] if v["impact"] in ("serious", "critical")]

    def session_storage(self) -> dict[str, str]:
        return self.page.evaluate("Object.fromEntries(Object.entries(sessionStorage))")


UI_TIMEOUT_MS = 60_000


@pytest.fixture
def console(browser: Any, stack: LocalStack) -> Iterator[ConsolePage]:
    from playwright.sync_api import expect

    context = browser.new_context(viewport=DESKTOP, accept_downloads=True, locale="en-US", timezone_id="UTC")
    # Waits for what the page will show, with deadlines a loaded 2-core machine meets (15 s
    # actions and 5 s expectations timed out there): how fast it showed is not under test.
    context.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    page = context.new_page()
    recorder = Recorder(origin=stack.api_url)
    page.on("request", lambda request: recorder.requests.append(request.url))
    page.on("response", lambda response: recorder.responses.__setitem__(response.url, response.status))
    page.on("console", lambda message: message.type == "error" and recorder.errors.append(
        (message.text, message.location.get("url", ""))))
    page.on("pageerror", lambda error: recorder.errors.append((f"uncaught: {error}", "")))
    page.on("dialog", lambda dialog: (recorder.dialogs.append(dialog.message), dialog.dismiss()))
    yield ConsolePage(page, stack, recorder)
    context.close()
    # THEN, whatever the test did: nothing left the origin, no error, no dialog
    assert recorder.foreign() == [], "requests to another origin"
    assert recorder.unexpected_errors() == [], "browser console errors"
    assert recorder.dialogs == [], "a dialog fired"


# ------------------------------------------------------------------------------ data


def create_tenant(admin: Api, name: str, plan: str = "starter") -> dict:
    created = admin.post("/billing/tenants", json={"name": name, "plan": plan})
    assert created.status_code == 201, created.text
    return created.json()


def create_key(admin: Api, tenant_id: str, scopes: list[str] | None = None, name: str = "browser") -> str:
    body: dict[str, Any] = {"name": name}
    if scopes:
        body["scopes"] = scopes
    created = admin.post(f"/billing/tenants/{tenant_id}/keys", json=body)
    assert created.status_code == 201, created.text
    return created.json()["key"]


def spend(stack: LocalStack, key: str, texts: list[str]) -> int:
    """Charged requests through the public API; returns the tokens charged."""
    api = Api(stack.api_url, key)
    tokens = 0
    for text in texts:
        response = api.post("/v1/embeddings", json={"model": MODEL, "input": text})
        assert response.status_code == 200, response.text
        tokens += response.json()["usage"]["prompt_tokens"]
    return tokens


def wait_for_tokens(api: Api, tenant_id: str | None, tokens: int, start: str, end: str, within_s: float = 10.0) -> None:
    """Until the reports (rollups, via the flusher) hold the tenant's tokens."""
    deadline = time.monotonic() + within_s
    while True:
        path, params = ("/v1/usage", {}) if tenant_id is None else ("/billing/usage", {"tenant_id": tenant_id})
        rows = api.get(path, params={"start": start, "end": end, **params}).json()["data"]
        if sum(r["prompt_tokens"] for r in rows) >= tokens:
            return
        assert time.monotonic() < deadline, f"usage of {tenant_id} not in the reports after {within_s} s"
        time.sleep(0.25)
