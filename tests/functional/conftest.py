from tests.integration.conftest import inference_url  # noqa: F401 - the real inference server, shared
