"""The webhook sender against real sockets on this machine: it connects to the address it
resolved and checked (once), keeps the Host header and the path, follows no redirect, and
reports refused connections and hanging receivers as failed attempts within its timeout."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gateway.adapters.webhook_sender import WebhookSender
from tests.webhook_receiver import Receiver

# The sender's timeout where the receiver answers at once: an attempt against a receiver in
# this process timed out at 2 s on a loaded 2-core machine. (The hanging receiver's test
# keeps its 1 s: that timeout is its subject, and the receiver hangs for 60.)
PROMPT_TIMEOUT_S = 30


def test_it_connects_to_the_address_it_resolved_once_keeping_host_and_path():
    receiver = Receiver(statuses=[204])
    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    lookups: list[str] = []

    def resolve(host: str, _: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    try:
        # (a prompt receiver: the timeout only has to be one a loaded machine's receiver meets)
        sender = WebhookSender(allow_local_http=True, timeout_s=PROMPT_TIMEOUT_S, resolver=resolve)
        outcome = sender.post(f"http://localhost:{port}/in/hook?tenant=a", b'{"id":"evt_1"}',
                              {"Content-Type": "application/json"})
        (request,) = receiver.wait_for(1)
        assert outcome.delivered and outcome.status_code == 204 and outcome.error is None
        assert lookups == ["localhost"]  # resolved once: the connection went to the checked address
        assert request.path == "/in/hook?tenant=a" and request.headers["Host"] == f"localhost:{port}"
        assert request.body == b'{"id":"evt_1"}' and request.headers["User-Agent"].startswith("maas-gateway")
    finally:
        receiver.close()


def test_a_redirect_is_not_followed():
    followed: list[str] = []

    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            followed.append(self.path)
            self.send_response(307)
            self.send_header("Location", "/elsewhere" if self.path == "/" else "/again")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        outcome = WebhookSender(allow_local_http=True, timeout_s=PROMPT_TIMEOUT_S).post(
            f"http://127.0.0.1:{server.server_address[1]}/", b"{}", {})
        assert (outcome.status_code, outcome.error, outcome.delivered) == (307, "redirects are not followed", False)
        assert followed == ["/"]
    finally:
        server.shutdown()
        server.server_close()


def test_refused_and_hanging_receivers_are_failed_attempts_within_the_timeout():
    sender = WebhookSender(allow_local_http=True, timeout_s=1)
    refused = sender.post("http://127.0.0.1:9/", b"{}", {})
    assert refused.status_code is None and refused.error.startswith("cannot connect")
    hanging = Receiver(hang_s=60)  # until close(): far past the sender's 1 s timeout
    try:
        outcome = sender.post(hanging.url, b"{}", {})
        assert outcome.status_code is None and outcome.error.startswith("timed out")
        # the sender gave up on its own timeout: the receiver got the request and still hangs
        assert len(hanging.received) == 1 and hanging.answered == 0
    finally:
        hanging.close()
