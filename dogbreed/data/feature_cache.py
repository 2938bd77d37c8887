"""Frozen-backbone feature cache: compute features once, train the head from them for every epoch and trial.

Entries are keyed by the backbone identity (name, weights, weights-file digest or, for a random
initialisation, the digest of the actual weights; preprocessing, augmentation, view count) and by each
image's content hash, so a changed image, transform or backbone never reuses a stale
feature, and only new or changed images are recomputed. Files are written atomically (temp + rename): a
killed run leaves the previous cache or none, never a truncated one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from dogbreed.atomic import write_text
from dogbreed.data.images import load_rgb

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$DOGBREED_CACHE_DIR`` or ``~/.cache/dogbreed/features`` (on SageMaker: the job's local disk)."""
    return Path(os.environ.get("DOGBREED_CACHE_DIR") or Path.home() / ".cache" / "dogbreed" / "features")


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def module_digest(module: torch.nn.Module) -> str:
    """Digest of a module's actual parameters and buffers: what a randomly initialised backbone computes
    depends on its draw, which no seed setting names (``seed=null``, or the next trial in one process)."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().reshape(-1).contiguous()
        h.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(parts: Mapping[str, Any]) -> str:
    """Stable digest of everything that changes a feature besides the image itself."""
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def view_image(
    path: str, digest: str, view: int, eval_tf: Callable, aug_tf: Callable, min_side: int
) -> torch.Tensor:
    """View ``view`` of an image as the cache computes it: 0 = the eval transform (centre crop), ≥ 1 = the
    train augmentation seeded by the image's digest, so a rebuilt cache (or a report) draws the same view."""
    img = load_rgb(path, min_side)
    if view == 0:
        return eval_tf(img)
    torch.manual_seed(int(digest[:15], 16) + view)
    return aug_tf(img)


class _Views(Dataset):
    """(image i, view v) pairs, each drawn by ``view_image``."""

    def __init__(
        self, items: Sequence[tuple[str, str, int]], eval_tf: Callable, aug_tf: Callable, min_side: int
    ) -> None:
        self.items = items  # (path, digest, view)
        self.eval_tf, self.aug_tf, self.min_side = eval_tf, aug_tf, min_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        path, digest, view = self.items[index]
        return view_image(path, digest, view, self.eval_tf, self.aug_tf, self.min_side)


class FeatureCache:
    """Features for one backbone identity under ``root/<key>/<split>.pt``."""

    def __init__(self, root: str | Path | None, key_parts: Mapping[str, Any]) -> None:
        self.key = cache_key(key_parts)
        self.dir = Path(root or default_cache_dir()).expanduser() / self.key
        self.key_parts = dict(key_parts)

    def _load(self, split: str) -> dict[str, Any]:
        path = self.dir / f"{split}.pt"
        if not path.is_file():
            return {}
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - an unreadable cache is recomputed, never trusted
            log.warning("Ignoring unreadable feature cache %s (%s)", path, exc)
            return {}
        return dict(zip(data["digests"], data["features"], strict=True))

    def _save(self, split: str, digests: list[str], features: torch.Tensor) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # Atomic, like the features: another run may be writing the same entry at the same time.
        write_text(self.dir / "key.json", json.dumps(self.key_parts, indent=2, sort_keys=True, default=str))
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{split}.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save({"digests": digests, "features": features}, tmp)
            os.replace(tmp, self.dir / f"{split}.pt")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def features(
        self,
        split: str,
        paths: Sequence[str],
        views: int,
        extractor: Callable[[torch.Tensor], torch.Tensor],
        eval_tf: Callable,
        aug_tf: Callable,
        min_side: int,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> torch.Tensor:
        """(N, views, D) float16 features for ``paths``; computes only what the cache lacks."""
        digests = [file_digest(p) for p in paths]
        known = self._load(split)
        missing = [
            (p, d) for p, d in zip(paths, digests, strict=True) if d not in known or known[d].shape[0] < views
        ]
        if missing:
            items = [(p, d, v) for p, d in missing for v in range(views)]
            loader = DataLoader(
                _Views(items, eval_tf, aug_tf, min_side),
                batch_size=batch_size,
                num_workers=num_workers,
                persistent_workers=False,
            )
            started, done, chunks = time.perf_counter(), 0, []
            log.info(
                "Feature cache %s/%s: computing %d image(s) × %d view(s)",
                self.key,
                split,
                len(missing),
                views,
            )
            # A cold cache must leave the run's random state as a warm one does (the head's dropout draws
            # from it): the loader's worker seeds and the seeded views draw from a fork.
            with torch.random.fork_rng(devices=[]):
                for batch in _progress(loader, f"caching {split} features"):
                    chunks.append(extractor(batch).to(torch.float16))
                    done += len(batch)
            elapsed = time.perf_counter() - started
            log.info(
                "Feature cache %s/%s: %d forward passes in %.1fs (%.1f img/s)",
                self.key,
                split,
                done,
                elapsed,
                done / max(elapsed, 1e-9),
            )
            new = torch.cat(chunks).view(len(missing), views, -1)
            known.update({d: new[i] for i, (_, d) in enumerate(missing)})
        result = torch.stack([known[d][:views] for d in digests])
        if missing:
            keep = sorted(set(digests))
            self._save(split, keep, torch.stack([known[d][:views] for d in keep]) if keep else result)
        return result


def _progress(loader: DataLoader, desc: str):
    """tqdm in a terminal; silent (log lines only) otherwise."""
    from tqdm import tqdm

    return tqdm(loader, desc=desc, unit="batch", total=len(loader), disable=None, leave=False)


class CachedFeatures(Dataset):
    """(feature, label) pairs; with several views, each access draws one view at random (augmentation)."""

    def __init__(
        self, features: torch.Tensor, targets: Sequence[int], random_view: bool, paths: Sequence[str] = ()
    ) -> None:
        self.features = features
        self.paths = list(paths)
        self.targets = torch.as_tensor(list(targets), dtype=torch.long)
        self.random_view = random_view and features.shape[1] > 1

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        view = int(torch.randint(self.features.shape[1], ())) if self.random_view else 0
        return self.features[index, view].float(), self.targets[index]
