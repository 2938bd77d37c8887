"""Everything ``python -m serve`` can set: one dataclass that validates itself; the CLI flags derive from it.

Each field's ``metadata`` holds its help text (and, where it differs from the field name, its flag);
:func:`build_parser` turns the fields into ``--flags`` with the dataclass defaults, so a new setting is one
field here. The request limits default to :class:`serve.inference.Limits`, whose defaults read the same
``DOGBREED_*`` environment variables as the SageMaker handler.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields

from serve.inference import Limits
from serve.runner import CALIBRATION_IMAGES, MIN_AGREEMENT, PRECISION_HELP, PRECISIONS

LOG_LEVELS = ("debug", "info", "warning", "error")
_LIMITS = Limits()


def _opt(help: str, flag: str | None = None, choices: tuple[str, ...] | None = None) -> dict:
    return {"help": help, "flag": flag, "choices": choices}


@dataclass
class Settings:
    """See ``python -m serve --help``; invalid values raise ValueError naming the flag."""

    model: str = field(metadata=_opt("model.pt (TorchScript export) or the folder holding it"))
    host: str = field(default="127.0.0.1", metadata=_opt("interface to bind (0.0.0.0 for all)"))
    port: int = field(default=8080, metadata=_opt("port (SageMaker's is 8080; 0 = any free port)"))
    max_batch_size: int = field(
        default=16,
        metadata=_opt(
            "most images per forward pass; the warm-up times every size up to it and lowers it to the "
            "largest whose cost per image is within 10%% of the best"
        ),
    )
    max_wait_ms: float = field(
        default=5.0, metadata=_opt("longest a forming batch waits for requests still being decoded")
    )
    max_queue: int = field(
        default=64,
        metadata=_opt(
            "images admitted (being read, decoded or waiting for the model) before new requests get 503 "
            "with Retry-After, answered before their body is read; a request with more images is a 413"
        ),
    )
    max_body_bytes: int = field(default=10 * 2**20, metadata=_opt("larger bodies get 413 (10 MiB)"))
    max_image_pixels: int = field(
        default=_LIMITS.max_image_pixels,
        metadata=_opt("images with more pixels (width × height, read from the header) get 413"),
    )
    max_request_pixels: int = field(
        default=_LIMITS.max_request_pixels,
        metadata=_opt(
            "pixels decoded for one request, all its images together (JPEGs at their reduced scale)"
        ),
    )
    max_aspect_ratio: float = field(
        default=_LIMITS.max_aspect_ratio,
        metadata=_opt("longer side / shorter side above which an image gets 413 (bounds the model's resize)"),
    )
    max_instances: int = field(
        default=_LIMITS.max_instances, metadata=_opt("most images in one JSON request")
    )
    timeout_s: float = field(
        default=30.0,
        metadata=_opt(
            "seconds a request may take: body upload (408 after) plus queueing, decoding and inference "
            "(503 after); also how long the model may make no progress before /ping says 503",
            flag="timeout",
        ),
    )
    header_timeout_s: float = field(
        default=10.0,
        metadata=_opt("seconds a connection has to send its request headers", flag="header-timeout"),
    )
    max_connections: int = field(
        default=1000,
        metadata=_opt("open connections; beyond it the longest-idle one is closed (503 when none is idle)"),
    )
    precision: str = field(default="auto", metadata=_opt(PRECISION_HELP, choices=PRECISIONS))
    calibration: str | None = field(
        default=None,
        metadata=_opt(
            "with --precision int8: a folder of images like the ones it will serve (e.g. the validation "
            f"split); of up to {CALIBRATION_IMAGES} of them, half set the int8 ranges, half check them"
        ),
    )
    int8_min_agreement: float = field(
        default=MIN_AGREEMENT,
        metadata=_opt(
            "with --precision int8: serve int8 only if its top-1 agrees with fp32 on at least this share "
            "of the held-out half of the calibration images, else fp32-frozen"
        ),
    )
    device: str | None = field(default=None, metadata=_opt("cpu or cuda (default: cuda when available)"))
    threads: int | None = field(
        default=None, metadata=_opt("torch intra-op threads (default: torch's choice)")
    )
    decode_workers: int = field(default=2, metadata=_opt("threads decoding images"))
    warmup: bool = field(
        default=True,
        metadata=_opt(
            "skip timing every batch size before /ping is ready (then --max-batch-size is used as given)",
            flag="no-warmup",
        ),
    )
    log_level: str = field(default="info", metadata=_opt("log level", choices=LOG_LEVELS))

    def __post_init__(self) -> None:
        if not os.path.exists(self.model):
            raise ValueError(f"--model {self.model}: no such file or folder (pass outputs/…/model/model.pt)")
        if self.precision == "int8" and not self.calibration:
            raise ValueError("--precision int8 needs --calibration DIR (images like the ones served)")
        if self.calibration and not os.path.isdir(self.calibration):
            raise ValueError(f"--calibration {self.calibration}: no such folder")
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            name = flag_name(f)
            if meta["choices"] and value not in meta["choices"]:
                raise ValueError(f"{name} must be one of {', '.join(meta['choices'])}, got {value!r}")
            if f.name == "port" and not 0 <= value <= 65535:
                raise ValueError(f"{name} must be 0–65535, got {value}")
            elif f.name == "int8_min_agreement" and not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
            elif f.name == "max_wait_ms" and value < 0:
                raise ValueError(f"{name} must be ≥ 0, got {value}")
            elif isinstance(value, float) and f.name != "max_wait_ms" and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
            elif isinstance(value, int) and not isinstance(value, bool) and f.name != "port" and value < 1:
                raise ValueError(f"{name} must be ≥ 1, got {value}")

    def limits(self) -> Limits:
        """The per-request limits the decoder enforces."""
        return Limits(
            self.max_image_pixels, self.max_request_pixels, self.max_aspect_ratio, self.max_instances
        )


def flag_name(f) -> str:
    return "--" + (f.metadata["flag"] or f.name.replace("_", "-"))


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """``--flag`` per :class:`Settings` field: its type, default, choices and help."""
    p = argparse.ArgumentParser(
        prog="python -m serve", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for f in fields(Settings):
        meta, flag = f.metadata, flag_name(f)
        if f.type in ("bool", bool):
            p.add_argument(
                flag, dest=f.name, action="store_false" if f.default else "store_true", help=meta["help"]
            )
            continue
        kind = {"int": int, "float": float, "int | None": int}.get(str(f.type), str)
        required = f.default is MISSING
        shown = "" if required or f.default is None else " (default %(default)s)"
        p.add_argument(
            flag,
            dest=f.name,
            metavar=flag[2:].upper().replace("-", "_"),
            type=kind,
            required=required,
            default=None if required else f.default,
            choices=meta["choices"],
            help=meta["help"] + shown,
        )
    return p


def parse_settings(argv: list[str] | None = None, description: str | None = None) -> Settings:
    """Command line → validated :class:`Settings` (a bad value exits 2 with the flag's name)."""
    p = build_parser(description)
    args = p.parse_args(argv)
    try:
        return Settings(**vars(args))
    except ValueError as e:
        p.error(str(e))
        raise  # unreachable: p.error exits
