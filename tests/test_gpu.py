"""The GPU lane (``make test-gpu``): precision, feature extraction, training, profiling and export on CUDA.

Every test here is marked ``gpu`` and skipped, with the reason, where torch sees no CUDA device
(``tests/conftest.py``); the CPU-only suite covers the same code paths with the GPU answers faked.
"""

from __future__ import annotations

import json

import pytest
import torch

from dogbreed import perf

pytestmark = pytest.mark.gpu


def test_precision_auto_picks_the_gpus_native_format() -> None:
    native = torch.cuda.get_device_capability()[0] >= 8  # bf16 tensor cores from Ampere on
    assert perf.bf16_native("cuda") is native
    assert perf.auto_precision("auto") == ("bf16-mixed" if native else "16-mixed")


def test_fast_extractor_on_cuda_matches_cpu_fp32_features() -> None:
    from torchvision import models

    torch.manual_seed(0)
    net = models.mobilenet_v2(weights=None).features[:7].eval()
    x = torch.randn(4, 3, 64, 64)
    extractor = perf.FeatureExtractor(net, device="cuda")
    assert extractor.autocast and "cuda" in extractor.describe()
    fast = extractor(x)
    slow = perf.FeatureExtractor(net, fast=False)(x)
    assert fast.device.type == "cpu" and fast.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(fast.flatten(1), slow.flatten(1))
    assert float(cos.min()) > 0.98


def test_a_gpu_run_trains_on_cuda_profiles_the_gpu_and_exports_for_cpu(cfg_factory, tmp_path) -> None:
    from dogbreed.train import train

    cfg = cfg_factory(["trainer=gpu", "trainer.precision=auto", "logger=none"])
    metrics, objects = train(cfg)
    trainer = objects["trainer"]
    assert trainer.strategy.root_device.type == "cuda"
    assert trainer.precision == perf.auto_precision("gpu")
    assert metrics["test_acc"] is not None and metrics["global_step"] > 0
    run = tmp_path / "run"
    summary = json.loads((run / "reports" / "profiler.json").read_text())["summary"]
    rules = {r["name"]: r for r in json.loads((run / "reports" / "profiler.json").read_text())["rules"]}
    assert summary["device"] == "cuda" and summary["gpus"] and summary["gpu_metrics_source"] == "nvml"
    for name in ("LowGPUUtilization", "BatchSize", "GPUMemoryIncrease"):
        assert "Does not apply" not in rules[name]["message"], rules[name]
    # Exported from a GPU run, the TorchScript model serves on a CPU-only machine.
    model = torch.jit.load(str(run / "model" / "model.pt"), map_location="cpu")
    probs = model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    assert probs.shape == (1, len(model.class_names)) and abs(float(probs.sum()) - 1.0) < 1e-4
