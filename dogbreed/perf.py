"""Fast-path decisions: whether bf16 is native here (the one probe ``precision=auto``, the feature extractor
and the profiler's advice share), which precision to use, and a backbone tuned for frozen feature extraction.

Measured on a 2-core AVX512-BF16 CPU (ResNet-50 forward, batch 32, see bench/train.py): fp32 ≈ 16 img/s,
bf16 autocast + channels_last ≈ 53, bf16 weights + channels_last + ``torch.jit.freeze`` ≈ 78.
"""

from __future__ import annotations

import copy
import logging
import platform
from functools import cache

import torch
from torch import nn

log = logging.getLogger(__name__)


@cache
def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 instructions: AVX512-BF16 or AMX on x86, BF16 on Arm.

    Not ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` on x86: it says yes for every AVX-512 CPU, where
    oneDNN emulates bf16 and runs slower than fp32. On Arm it is the check that knows the BF16 extension.
    """
    try:
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_native(device: str) -> bool:
    """bf16 is native on ``device`` (``cuda`` or ``cpu``): a GPU of compute capability 8.0+ (Ampere on;
    ``torch.cuda.is_bf16_supported()`` alone also counts emulation) or :func:`cpu_supports_bf16`."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return device == "cpu" and cpu_supports_bf16()


def auto_precision(accelerator: str = "auto") -> str:
    """``trainer.precision=auto``: bf16-mixed where bf16 is native (:func:`bf16_native`), 16-mixed on older
    GPUs, else 32-true."""
    use_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if use_cuda:
        return "bf16-mixed" if bf16_native("cuda") else "16-mixed"
    return "bf16-mixed" if bf16_native("cpu") else "32-true"


class FeatureExtractor:
    """Frozen backbone → pooled features, as fast as this device allows.

    CPU with bf16: a bf16, channels_last copy traced and frozen with TorchScript (conv+BN folding, oneDNN).
    CUDA: channels_last under bf16 autocast. Otherwise fp32 channels_last. Always inference mode.
    """

    def __init__(self, backbone: nn.Module, device: str | torch.device = "cpu", fast: bool = True) -> None:
        self.device = torch.device(device)
        net = copy.deepcopy(backbone).eval().to(self.device)
        self.dtype = torch.float32
        self.autocast = False
        if fast:
            net = net.to(memory_format=torch.channels_last)
            if self.device.type == "cuda":
                self.autocast = True
            elif cpu_supports_bf16():
                self.dtype = torch.bfloat16
                net = net.to(torch.bfloat16)
        self.fast = fast
        self.net = net
        self._frozen: torch.jit.ScriptModule | None = None

    def describe(self) -> str:
        mode = "bf16 weights + channels_last + jit.freeze" if self.dtype == torch.bfloat16 else "fp32"
        if self.autocast:
            mode = "bf16 autocast + channels_last"
        return f"{mode} on {self.device}"

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float images (N, 3, H, W) → features (N, D) in float32."""
        x = images.to(self.device, non_blocking=True)
        if self.fast:
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.to(self.dtype)
        if self.autocast:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                out = self.net(x)
        elif self.dtype == torch.bfloat16:
            if self._frozen is None:
                # Trace and run TorchScript's profiling passes on two images:
                # on a full batch they cost seconds.
                small = x[:2]
                self._frozen = torch.jit.freeze(torch.jit.trace(self.net, small, check_trace=False))
                for _ in range(2):
                    self._frozen(small)
            out = self._frozen(x)
        else:
            out = self.net(x)
        return torch.flatten(out, 1).float().cpu()
