"""One bf16 probe (``dogbreed.perf``) decides ``precision=auto``, the feature extractor's fast path and the
profiler's bf16 advice, so they cannot disagree; it asks for *native* bf16, never emulation."""

from __future__ import annotations

import platform

import pytest
import torch

from dogbreed import perf


@pytest.fixture
def x86(monkeypatch: pytest.MonkeyPatch):
    """``x86(avx512_bf16=…, amx=…)``: pretend to be an x86 CPU on which oneDNN can run bf16 (natively or by
    emulation, as on every AVX-512 CPU)."""

    def pretend(avx512_bf16: bool = False, amx: bool = False) -> None:
        perf.cpu_supports_bf16.cache_clear()
        monkeypatch.setattr(platform, "machine", lambda: "x86_64")
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)

    yield pretend
    perf.cpu_supports_bf16.cache_clear()


def test_avx512_without_bf16_instructions_stays_fp32(x86) -> None:
    x86(avx512_bf16=False, amx=False)  # oneDNN would emulate bf16 here: slower than fp32
    assert not perf.cpu_supports_bf16() and not perf.bf16_native("cpu")
    assert perf.auto_precision("cpu") == "32-true"
    assert perf.FeatureExtractor(torch.nn.Conv2d(3, 4, 3)).dtype == torch.float32


@pytest.mark.parametrize(("avx512_bf16", "amx"), [(True, False), (False, True)])
def test_native_bf16_cpus_get_bf16_everywhere(x86, avx512_bf16: bool, amx: bool) -> None:
    x86(avx512_bf16=avx512_bf16, amx=amx)
    assert perf.cpu_supports_bf16() and perf.bf16_native("cpu")
    assert perf.auto_precision("cpu") == "bf16-mixed"
    assert perf.FeatureExtractor(torch.nn.Conv2d(3, 4, 3)).dtype == torch.bfloat16


@pytest.mark.parametrize(("capability_8", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_gpus_before_ampere_get_fp16_not_emulated_bf16(
    monkeypatch, capability_8: bool, expected: str
) -> None:
    # torch.cuda.is_bf16_supported() says yes on a T4/V100 too (emulation) unless asked for native only.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: capability_8 or including_emulation
    )
    assert perf.bf16_native("cuda") is capability_8
    assert perf.auto_precision("gpu") == expected
    assert not perf.bf16_native("mps")


@pytest.mark.parametrize(
    ("machine", "avx512_bf16", "amx", "mkldnn"),
    [("x86_64", False, False, True), ("x86_64", True, False, True), ("x86_64", False, True, False),
     ("aarch64", False, False, True), ("aarch64", False, False, False)],
)  # fmt: skip
def test_serve_keeps_its_own_copy_of_the_same_bf16_probe(monkeypatch, machine, avx512_bf16, amx, mkldnn):
    """serve/ may not import dogbreed, so serve.runner has its own probe; it must answer as perf's does."""
    from serve import runner

    for probe in (perf.cpu_supports_bf16, runner.cpu_supports_bf16):
        probe.cache_clear()
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn)
    try:
        assert runner.cpu_supports_bf16() == perf.cpu_supports_bf16()
        assert runner.bf16_native(torch.device("cpu")) == perf.bf16_native("cpu")
    finally:
        for probe in (perf.cpu_supports_bf16, runner.cpu_supports_bf16):
            probe.cache_clear()
