"""The local stack's stand-in for S3's presigned URLs: serves the Batch API's folder of files
(MAAS_FILES_DIR) to whoever holds a URL the gateway signed (``FolderStore.url``), until it
expires. A file too large for a Lambda's answer (6 MB) is answered with a redirect here, as
S3 serves it in AWS. Development only; it reads nothing but signed names."""

from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from gateway.adapters.object_store import FolderStore


def serve(store: FolderStore, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            try:
                data = store.signed(unquote(url.path).lstrip("/"), query.get("expires", [""])[0],
                                    query.get("signature", [""])[0])
            except ValueError:  # not an object name
                data = None
            if data is None:
                self.send_error(403, "not a valid or current link")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/jsonl")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def main() -> None:
    from gateway.wiring import Container

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    store = Container().object_store
    if not isinstance(store, FolderStore):
        raise SystemExit("the file server serves MAAS_FILES_DIR; MAAS_FILES_BUCKET is S3's own")
    serve(store, parser.parse_args().port).serve_forever()


if __name__ == "__main__":
    main()
