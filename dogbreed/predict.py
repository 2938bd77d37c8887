"""Load a trained model in one call and predict PIL images or files.

from dogbreed import load_model
predictor = load_model("outputs/…/model/model.pt")     # or a .ckpt, model.tar.gz, the model/ folder
predictor.predict("dog.jpg", top_k=3)
# [Prediction(label='001.Affenpinscher', probability=0.93, top_k=[('001.Affenpinscher', 0.93), …])]

:func:`load_module` is the library's one artifact resolver (the predictor, evaluation and training's
export use it); ``serve/`` keeps a standalone copy, ``serve.predict.load_artifact``, because it must run
with only torch and Pillow installed.
"""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from dogbreed.data.images import load_rgb, to_rgb

ImageLike = str | Path | Image.Image


@dataclass
class Prediction:
    label: str
    probability: float
    top_k: list[tuple[str, float]] = field(default_factory=list)


def load_checkpoint(path: str | Path):
    """A BreedClassifier from a Lightning checkpoint, without fetching pretrained weights again.

    ``weights=None`` only skips the download: the preprocessing (resize, crop, mean, std) of the weights the
    model was trained with is restored from the checkpoint (``BreedClassifier.on_load_checkpoint``).
    """
    from dogbreed.model import BreedClassifier

    # The trained weights come from the checkpoint: silence build_backbone's "random initialisation" notice.
    backbones_log = logging.getLogger("dogbreed.backbones")
    level = backbones_log.level
    backbones_log.setLevel(logging.WARNING)
    try:
        model = BreedClassifier.load_from_checkpoint(
            str(path), map_location="cpu", weights_only=True, weights=None, weights_file=None
        )
    finally:
        backbones_log.setLevel(level)
    return model.eval()


def load_export(path: str | Path) -> torch.jit.ScriptModule:
    """dogbreed's TorchScript export from ``model.pt`` or from inside ``model.tar.gz`` (as a SageMaker job
    returns it), on the CPU; anything else fails naming the file."""
    path = Path(path)
    data: bytes | str = str(path)
    if path.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(path, "r:gz") as tar:
            member = next(
                (m for m in tar.getmembers() if m.isfile() and Path(m.name).name == "model.pt"), None
            )
            if member is None:
                raise ValueError(
                    f"{path} holds no model.pt; expected the model.tar.gz written by dogbreed's export"
                )
            data = tar.extractfile(member).read()
    try:
        module = torch.jit.load(io.BytesIO(data) if isinstance(data, bytes) else data, map_location="cpu")
    except RuntimeError as exc:
        raise ValueError(
            f"{path} is neither a Lightning checkpoint (.ckpt) nor a TorchScript model.pt ({exc})"
        ) from None
    if not hasattr(module, "class_names") or not hasattr(module, "predict_images"):
        raise ValueError(
            f"{path} is TorchScript but not a dogbreed export (no class_names / predict_images); re-export it"
        )
    return module.eval()


def load_module(path: str | Path) -> nn.Module:
    """The one resolver: a BreedClassifier from a ``.ckpt``; the TorchScript export from ``model.pt``, the
    folder holding it, or ``model.tar.gz``."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file. Pass a Lightning checkpoint (.ckpt), an exported model.pt, "
            "the model.tar.gz a SageMaker job wrote, or the folder holding model.pt"
        )
    if path.suffix == ".ckpt":
        return load_checkpoint(path)
    return load_export(path)


class Predictor:
    """Wraps a TorchScript export (or an eager ExportedClassifier) that maps uint8 images to probabilities."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module.eval()
        self.class_names: list[str] = list(module.class_names)

    def _tensor(self, image: ImageLike) -> torch.Tensor:
        img = to_rgb(image) if isinstance(image, Image.Image) else load_rgb(image)
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()

    @torch.inference_mode()
    def probabilities(self, images: Sequence[ImageLike]) -> torch.Tensor:
        return self.module.predict_images([self._tensor(i) for i in images])

    def predict(self, image: ImageLike | Sequence[ImageLike], top_k: int = 5) -> list[Prediction]:
        """One Prediction per image (a single image or path gives a one-element list)."""
        images = [image] if isinstance(image, str | Path | Image.Image) else list(image)
        probs = self.probabilities(images)
        k = max(1, min(top_k, len(self.class_names)))
        values, indices = probs.topk(k, dim=1)
        out = []
        for vals, idxs in zip(values.tolist(), indices.tolist(), strict=True):
            top = [(self.class_names[i], float(v)) for v, i in zip(vals, idxs, strict=True)]
            out.append(Prediction(label=top[0][0], probability=top[0][1], top_k=top))
        return out


def load_model(path: str | Path) -> Predictor:
    """A Predictor over whatever :func:`load_module` reads (a checkpoint wrapped as the export is)."""
    module = load_module(path)
    if not hasattr(module, "predict_images"):
        from dogbreed.export import wrap

        module = wrap(module)
    return Predictor(module)
