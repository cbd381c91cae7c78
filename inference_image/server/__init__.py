"""The inference server, in TEI's three layers.

- transport: ``http`` (a small HTTP/1.1 server on asyncio + httptools), ``app`` (routes,
  content negotiation, the error mapping), ``schemas`` (request validation, response bodies)
  and ``gateway.wire`` (the binary hop format)
- scheduling: ``batcher`` (fair dynamic batching across tenants under a token budget, with
  deadlines, disconnects and an express lane)
- compute: ``session`` (ONNX Runtime sessions: ``initialize`` / ``execute`` / ``finalize``)

``python -m inference_image.server`` (or the ``serve`` script) is both the container entrypoint
and the local process.
"""
