"""Provider honesty: the server says what it runs on, and refuses to pass for a GPU."""

from __future__ import annotations

import json
import time

import pytest

from inference_image.server.config import Settings
from inference_image.server.metrics import gpu_active_line


def _emf_lines(log: str) -> list[dict]:
    return [json.loads(line) for line in log.splitlines() if line.startswith('{"_aws"')]


def test_require_gpu_on_a_cpu_answers_503_and_says_why(make_server) -> None:
    # GIVEN a server that must run on a GPU, on a machine without one
    srv = make_server(wait_ready=False, MAAS_REQUIRE_GPU="true", MAAS_LOG_LEVEL="info")
    # WHEN the model has loaded (on the CPU: the only provider that works here)
    deadline = time.monotonic() + 90
    while True:
        status, headers, body = srv.get("/ping")
        code = json.loads(body)["error"]["code"] if status != 200 else None
        if code != "model_loading":
            break
        assert time.monotonic() < deadline, "the model never loaded"
        time.sleep(0.2)
    # THEN /ping refuses (SageMaker and the image's HEALTHCHECK see an unhealthy container),
    # says why, and the log and the CloudWatch metric say the same
    assert status == 503 and code == "gpu_required", body
    assert "CPUExecutionProvider" in json.loads(body)["error"]["message"]
    assert int(headers["retry-after"]) >= 1
    assert "MAAS_REQUIRE_GPU=true but the model runs on CPUExecutionProvider" in srv.log()
    (emf, *_) = _emf_lines(srv.log())
    assert emf["InferenceGpuActive"] == 0
    assert srv.metric("maas_inference_ready") == 0


def test_gpu_metric_line_is_embedded_metric_format() -> None:
    line = json.loads(gpu_active_line("CUDAExecutionProvider", True))
    directive = line["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "MaasGateway"
    assert directive["Dimensions"] == [["service"]]
    assert directive["Metrics"] == [{"Name": "InferenceGpuActive", "Unit": "None"}]
    assert line["service"] == "maas-inference" and line["InferenceGpuActive"] == 1
    assert abs(line["_aws"]["Timestamp"] / 1000 - time.time()) < 60
    assert json.loads(gpu_active_line("CPUExecutionProvider", False))["InferenceGpuActive"] == 0


def test_settings_read_the_provider_variables() -> None:
    s = Settings.from_env({"MAAS_PROVIDERS": "cuda,cpu", "MAAS_REQUIRE_GPU": "true"})
    assert (s.providers, s.require_gpu) == ("cuda,cpu", True)
    assert not Settings.from_env({}).require_gpu
    with pytest.raises(ValueError):
        Settings.from_env({"MAAS_REQUIRE_GPU": "maybe"})


def test_cpu_server_reports_its_provider_in_ping_and_on_stdout(server) -> None:
    status, _, body = server.get("/ping")
    assert status == 200 and json.loads(body)["provider"] == "CPUExecutionProvider"
    (first, *_) = _emf_lines(server.log())
    assert first["InferenceGpuActive"] == 0 and first["provider"] == "CPUExecutionProvider"
