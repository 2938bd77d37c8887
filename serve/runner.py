"""Batch inference for the server: model.pt run the fastest way this machine allows.

``fp32`` calls the artifact's ``predict_images`` (bit-for-bit what ``dogbreed.load_model`` gives).
``bf16`` on a CPU with native bf16 kernels (AVX512-BF16/AMX) runs the artifact's own ``preprocess`` in fp32,
then a bf16, channels_last, ``torch.jit.freeze``-d copy of its network — several times the fp32
throughput on batches, with probabilities within ~1e-2 of fp32. On CUDA it is bf16 autocast.
``auto`` picks bf16 where it is native, else fp32.
"""

from __future__ import annotations

import copy
import logging
import platform
import time
import warnings
from functools import cache

import torch

from serve.inference import probabilities

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "bf16")


@cache
def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 instructions: AVX512-BF16 or AMX on x86, BF16 on Arm.

    The same probe as ``dogbreed.perf.cpu_supports_bf16`` (serve does not import dogbreed; a test keeps the
    two in step): mkldnn's own check says yes on every AVX-512 CPU, where bf16 is emulated and slower.
    """
    try:
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_native(device: torch.device) -> bool:
    """Native bf16 on ``device``: a GPU of compute capability 8.0+ (not emulation), or a native CPU."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu_supports_bf16()


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → ``bf16`` where bf16 is native (bf16 CPU, or a GPU that supports it), else ``fp32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    native = bf16_native(device)
    if precision == "auto":
        return "bf16" if native else "fp32"
    if precision == "bf16" and not native:
        log.warning(
            "bf16 is emulated on this %s (no native kernels): expect it to be slower than fp32", device.type
        )
    return precision


def pick_batch_size(per_image: dict[int, float], tolerance: float = 0.1) -> int:
    """The largest batch size whose cost per image is within ``tolerance`` of the cheapest."""
    best = min(per_image.values())
    return max(n for n, cost in per_image.items() if cost <= best * (1.0 + tolerance))


class Runner:
    """``runner(list of uint8 (3, H, W) tensors) -> probabilities (N, classes)`` on the CPU, in float32."""

    def __init__(self, model: torch.jit.ScriptModule, precision: str = "fp32") -> None:
        self.model = model
        self.class_names: list[str] = list(model.class_names)
        self.device = next(model.parameters()).device
        self.resize_size: int | None = int(model.resize_size) if hasattr(model, "resize_size") else None
        self.precision = resolve_precision(precision, self.device)
        self._fast = None
        if self.precision == "bf16" and self.device.type == "cpu":
            if hasattr(model, "net") and hasattr(model, "preprocess"):
                with (
                    warnings.catch_warnings()
                ):  # deprecation notices from torch.jit, a .grad probe in deepcopy
                    warnings.simplefilter("ignore")
                    net = (
                        copy.deepcopy(model.net)
                        .eval()
                        .to(torch.bfloat16)
                        .to(memory_format=torch.channels_last)
                    )
                    self._fast = torch.jit.freeze(net)
            else:
                log.warning("model.pt has no separate net/preprocess: serving it in fp32")
                self.precision = "fp32"

    def describe(self) -> str:
        mode = {
            "fp32": "fp32",
            "bf16": "bf16 autocast" if self.device.type == "cuda" else "bf16 frozen channels_last",
        }
        return f"{mode[self.precision]} on {self.device}"

    @torch.inference_mode()
    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        if self.precision == "fp32":
            return probabilities(images, self.model)
        if self._fast is None:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return probabilities(images, self.model)
        return self.forward([self.preprocess(img) for img in images])

    @property
    def splits(self) -> bool:
        """Whether :meth:`preprocess` and :meth:`forward` run as two stages (every dogbreed export does)."""
        return hasattr(self.model, "net") and hasattr(self.model, "preprocess")

    @torch.inference_mode()
    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """One uint8 (3, H, W) image → the network's input (1, 3, crop, crop), or the image itself when the
        model has no separate preprocess. Safe to call from other threads (the folder scorer's decoders)."""
        if not self.splits:
            return image
        return self.model.preprocess(image.to(self.device).unsqueeze(0))

    @torch.inference_mode()
    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`preprocess`'s outputs → probabilities (N, classes) on the CPU, in float32: in fp32 the same
        numbers as calling the runner on the images (bf16 autocast on CUDA: within its rounding)."""
        if not self.splits:
            return self(inputs)
        x = torch.cat(inputs, dim=0)
        if self._fast is not None:
            logits = self._fast(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
            return torch.softmax(logits.float(), dim=1)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return torch.softmax(self.model.net(x), dim=1).float().cpu()

    def warmup(self, max_batch_size: int, size: tuple[int, int] = (300, 400), tolerance: float = 0.1) -> int:
        """Run every batch size up to ``max_batch_size`` (so TorchScript's per-shape profiling and oneDNN's
        kernel selection happen now, not during a request) and time it; return the batch size to use.

        Bigger batches are not always cheaper per image: on a small CPU in fp32 a batch of 16 can cost
        more per image than one at a time (activations fall out of cache). The answer is the largest
        size whose per-image time is within ``tolerance`` of the best measured.
        """
        image = torch.randint(0, 256, (3, *size), dtype=torch.uint8)
        per_image: dict[int, float] = {}
        for _ in range(2):  # the first pass pays for profiling; keep the faster of two
            for n in range(1, max_batch_size + 1):
                started = time.perf_counter()
                self([image] * n)
                cost = (time.perf_counter() - started) / n
                per_image[n] = min(per_image.get(n, cost), cost)
        chosen = pick_batch_size(per_image, tolerance)
        log.info(
            "per-image ms by batch size: %s → batches of up to %d",
            " ".join(f"{n}:{1000 * c:.1f}" for n, c in per_image.items()),
            chosen,
        )
        return chosen
