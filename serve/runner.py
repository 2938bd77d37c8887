"""Batch inference for the server: model.pt run the fastest way this machine allows.

The measured speed and agreement of each are in ``PRECISION_HELP`` (``python -m serve --help``).

``fp32-frozen`` (what ``auto`` picks): the artifact's own ``preprocess`` in fp32, then a channels_last,
``torch.jit.freeze``-d copy of its network (BatchNorm folded into the convolutions, oneDNN kernels);
probabilities within 1e-3 of fp32 (``tests/test_serve_precision.py`` pins it).
``fp32``: the artifact's ``predict_images``, bit-for-bit what ``dogbreed.load_model`` gives.
``int8``: the frozen network quantized by TorchScript graph-mode post-training quantization (x86 backend:
per-channel int8 weights, int8 activations whose ranges come from ``calibration`` images, fbgemm/oneDNN
kernels), served only when its top-1 agrees with fp32 on ``min_agreement`` (99%) of the held-out half of
the calibration images, else ``fp32-frozen``. Calibrating takes seconds to a minute at start-up.
``bf16``: on a CPU with native bf16 (AVX512-BF16/AMX) a bf16 copy of the frozen network, probabilities
within ~1e-2; on CUDA bf16 autocast; elsewhere emulated and slower than fp32.
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
PRECISIONS = ("auto", "fp32-frozen", "fp32", "int8", "bf16")
# Measured by `python bench/serve.py --threads 1 --levels 1,8 --requests 120 --soak 0` (MobileNetV2, random
# init, 133 classes) on a busy 2-core AMD EPYC (AVX2, no AVX-512); throughput vs the one-request-at-a-time
# eager handler at concurrency 8. int8's agreement: the demo model (real MobileNetV2 weights), 160 test
# images.
PRECISION_HELP = (
    "auto = fp32-frozen. fp32-frozen = the network frozen (BatchNorm folded) in channels_last, probabilities "
    "within 1e-3 of fp32: 1.7x a one-request-at-a-time eager handler at concurrency 8 (2.7x at 1; 2-core "
    "AVX2 CPU, MobileNetV2); fp32 = exactly the artifact's numbers (1.5x); int8 = post-training "
    "quantization calibrated on --calibration images (2.5x), served only when its top-1 agrees with fp32 on "
    "--int8-min-agreement of held-out calibration images (the demo MobileNetV2 agrees on 89 per cent, so it "
    "falls back to fp32-frozen); bf16 = for CPUs with AVX512-BF16/AMX and GPUs (emulated, slower, elsewhere)"
)
CALIBRATION_IMAGES = 64  # the most images read from --calibration: half calibrate int8, half check it
MIN_AGREEMENT = 0.99  # int8 is served only when its top-1 agrees with fp32 this often on the checked half


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
    """``auto`` → ``fp32-frozen`` (the fast path whose probabilities stay within 1e-3 of fp32); bf16 and
    int8 change the numbers more, so they are asked for by name."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "fp32-frozen"
    if precision == "bf16" and not bf16_native(device):
        log.warning(
            "bf16 is emulated on this %s (no native kernels): expect it to be slower than fp32", device.type
        )
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision int8 runs on the CPU only, not {device.type}: use fp32-frozen or bf16")
    return precision


def frozen_copy(net: torch.jit.ScriptModule, dtype: torch.dtype = torch.float32) -> torch.jit.ScriptModule:
    """A channels_last, ``torch.jit.freeze``-d copy of ``net`` in ``dtype`` (BatchNorm folded, oneDNN)."""
    with warnings.catch_warnings():  # deprecation notices from torch.jit, a .grad probe in deepcopy
        warnings.simplefilter("ignore")
        copied = copy.deepcopy(net).eval().to(dtype).to(memory_format=torch.channels_last)
        return torch.jit.freeze(copied)


def quantize_int8(net: torch.jit.ScriptModule, batches: list[torch.Tensor]) -> torch.jit.ScriptModule:
    """Post-training static int8 quantization of a TorchScript network, calibrated on ``batches`` (its
    preprocessed inputs). TorchScript graph mode because model.pt carries no eager module (FX
    and PT2E need one; PT2E has also left torch for torchao and needs Inductor to run int8). x86's qconfig
    keeps activations to 7 bits: full-range int8 saturates AVX2's multiply-add (top-1 agreement fell to 22%
    on the demo model)."""
    from torch.ao.quantization import get_default_qconfig
    from torch.ao.quantization.quantize_jit import convert_jit, prepare_jit

    with warnings.catch_warnings():  # quantize_jit's and quantized tensors' deprecation notices
        warnings.simplefilter("ignore")
        torch.backends.quantized.engine = "x86"
        prepared = prepare_jit(copy.deepcopy(net).eval(), {"": get_default_qconfig("x86")})
        for batch in batches:
            prepared(batch)
        return convert_jit(prepared)


def calibration_inputs(runner: Runner, folder: str | None) -> torch.Tensor:
    """Up to ``CALIBRATION_IMAGES`` images spread evenly over ``folder`` (recursively), decoded and
    preprocessed as requests are: (N, 3, crop, crop)."""
    from serve.inference import decode_image
    from serve.score_folder import PredictError, find_images

    if not folder:
        raise ValueError(
            "precision int8 needs --calibration DIR: a folder of images like the ones it will serve (e.g. "
            "the validation split); their activations set the int8 ranges"
        )
    try:
        paths = [s.path for s in find_images([folder])]
    except PredictError as e:
        raise ValueError(f"--calibration {e}") from e
    if len(paths) < 2:
        raise ValueError(f"--calibration {folder}: {len(paths)} image(s); int8 needs at least 2")
    step = max(1, len(paths) // CALIBRATION_IMAGES)
    inputs = []
    for path in paths[::step][:CALIBRATION_IMAGES]:
        with open(path, "rb") as f:
            inputs.append(runner.preprocess(decode_image(f.read(), min_side=runner.resize_size)))
    return torch.cat(inputs)


def top1_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of rows whose arg-max agrees."""
    return float((a.argmax(1) == b.argmax(1)).float().mean())


def pick_batch_size(per_image: dict[int, float], tolerance: float = 0.1) -> int:
    """The largest batch size whose cost per image is within ``tolerance`` of the cheapest."""
    best = min(per_image.values())
    return max(n for n, cost in per_image.items() if cost <= best * (1.0 + tolerance))


class Runner:
    """``runner(list of uint8 (3, H, W) tensors) -> probabilities (N, classes)`` on the CPU, in float32."""

    def __init__(
        self,
        model: torch.jit.ScriptModule,
        precision: str = "auto",
        calibration: str | None = None,
        min_agreement: float = MIN_AGREEMENT,
    ) -> None:
        self.model = model
        self.class_names: list[str] = list(model.class_names)
        self.device = next(model.parameters()).device
        self.resize_size: int | None = int(model.resize_size) if hasattr(model, "resize_size") else None
        self.precision = resolve_precision(precision, self.device)
        self._fast: torch.jit.ScriptModule | None = None
        self.agreement: float | None = None  # int8: top-1 agreement with fp32 on held-out calibration images
        if self.precision == "fp32" or (self.precision == "bf16" and self.device.type == "cuda"):
            return
        if not self.splits:
            log.warning("model.pt has no separate net/preprocess: serving it in fp32")
            self.precision = "fp32"
        elif self.precision == "int8":
            self._int8(calibration, min_agreement)
        else:
            self._fast = frozen_copy(model.net, torch.bfloat16 if self.precision == "bf16" else torch.float32)

    @torch.inference_mode()
    def _int8(self, calibration: str | None, min_agreement: float) -> None:
        """Calibrate on every other calibration image, check top-1 against fp32 on the rest; below
        ``min_agreement`` serve ``fp32-frozen`` (with a warning): int8 never costs accuracy silently."""
        started = time.perf_counter()
        inputs = calibration_inputs(self, calibration)
        calibrate, check = inputs[0::2], inputs[1::2]
        quantized = quantize_int8(self.model.net, list(calibrate.split(8)))
        self.agreement = top1_agreement(quantized(check), self.model.net(check))
        log.info(
            "int8: calibrated on %d image(s); top-1 agrees with fp32 on %.1f per cent of %d held-out (%.1fs)",
            len(calibrate),
            100 * self.agreement,
            len(check),
            time.perf_counter() - started,
        )
        if self.agreement >= min_agreement:
            self._fast = quantized
            return
        log.warning(
            "int8 agrees with fp32 on only %.1f per cent of held-out calibration images (< %.1f): serving "
            "fp32-frozen instead",
            100 * self.agreement,
            100 * min_agreement,
        )
        self.precision = "fp32-frozen"
        self._fast = frozen_copy(self.model.net)

    def describe(self) -> str:
        mode = {
            "fp32": "fp32",
            "fp32-frozen": "fp32 frozen channels_last",
            "int8": "int8 (TorchScript post-training quantization)",
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
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
            logits = self._fast(x.to(dtype).contiguous(memory_format=torch.channels_last))
            return torch.softmax(logits.float(), dim=1).cpu()
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
