"""The inference server, in TEI's three layers.

- transport: ``app`` (Starlette routes) and ``schemas`` (request validation, response shapes)
- scheduling: ``batcher`` (dynamic batching under a token budget)
- compute: ``session`` (one ONNX Runtime session: ``initialize`` / ``execute`` / ``finalize``)

``python -m inference_image.server`` (or the ``serve`` script) is both the container entrypoint
and the local process.
"""
