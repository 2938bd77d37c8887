"""The exported TorchScript runs without dogbreed, agrees with the checkpoint, and packs for SageMaker."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from dogbreed.predict import load_model


def held_out_images(root: Path) -> list[tuple[Path, str]]:
    return [(img, cls.name) for cls in sorted((root / "test").iterdir()) for img in sorted(cls.iterdir())]


def test_torchscript_round_trip_without_dogbreed(trained_run, synthetic_root):
    model_pt = Path(trained_run["output_dir"]) / "model" / "model.pt"
    images = held_out_images(synthetic_root)
    script = textwrap.dedent(
        """
        import json, sys
        class Block:  # make `import dogbreed` impossible in this interpreter
            def find_spec(self, name, path=None, target=None):
                if name == "dogbreed" or name.startswith("dogbreed."):
                    raise ImportError("dogbreed is blocked in this test")
        sys.meta_path.insert(0, Block())
        import numpy as np, torch
        from PIL import Image
        m = torch.jit.load(sys.argv[1])
        out = []
        for path in sys.argv[2:]:
            arr = np.asarray(Image.open(path).convert("RGB"))
            probs = m(torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous())
            out.append([m.class_names[int(probs.argmax())], float(probs.sum())])
        try:
            import dogbreed  # noqa
            out.append("dogbreed importable")
        except ImportError:
            pass
        print(json.dumps(out))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(model_pt), *[str(p) for p, _ in images]],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    scripted = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(scripted) == len(images)  # and "dogbreed importable" was not appended
    assert all(abs(total - 1.0) < 1e-4 for _, total in scripted)  # probabilities, not logits

    ckpt = Path(trained_run["best_checkpoint"])
    eager = load_model(ckpt).predict([p for p, _ in images])
    assert [label for label, _ in scripted] == [p.label for p in eager]
    accuracy = sum(label == truth for (label, _), (_, truth) in zip(scripted, images, strict=True)) / len(
        images
    )
    assert accuracy == pytest.approx(trained_run["test_acc"], abs=0.07)


def test_model_tar_has_model_and_handler(trained_run):
    tar_path = Path(trained_run["output_dir"]) / "model" / "model.tar.gz"
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
        handler = tar.extractfile("code/inference.py").read().decode()
    assert {"model.pt", "code/inference.py"} <= names
    assert "def model_fn" in handler


def test_class_names_and_metadata_travel_with_the_file(trained_run, synthetic_root):
    import torch

    model_pt = Path(trained_run["output_dir"]) / "model" / "model.pt"
    extra = {"dogbreed.json": ""}
    m = torch.jit.load(str(model_pt), _extra_files=extra)
    classes = sorted(p.name for p in (synthetic_root / "train").iterdir())
    assert list(m.class_names) == classes
    meta = json.loads(extra["dogbreed.json"])
    assert meta["class_names"] == classes and meta["output"].startswith("probabilities")
    assert meta["preprocess"]["crop_size"] == 224


def test_predictor_from_pt_and_ckpt_agree_and_accept_pil_and_paths(trained_run, synthetic_root):
    from PIL import Image

    path, truth = held_out_images(synthetic_root)[0]
    from_pt = load_model(Path(trained_run["output_dir"]) / "model" / "model.pt")
    from_ckpt = load_model(trained_run["best_checkpoint"])
    a = from_pt.predict(path, top_k=3)[0]
    b = from_ckpt.predict(Image.open(path).convert("L"), top_k=3)[0]  # grayscale input is converted
    c = from_ckpt.predict(Image.open(path), top_k=3)[0]
    assert a.label == c.label and a.probability == pytest.approx(c.probability, abs=1e-2)
    assert len(a.top_k) == 3 and a.top_k[0] == (a.label, a.probability)
    assert b.label in from_ckpt.class_names


def test_export_check_rejects_a_mismatching_file(trained_run):
    import torch

    from dogbreed.export import check_export, to_torchscript
    from dogbreed.predict import load_checkpoint

    model = load_checkpoint(trained_run["best_checkpoint"])
    buffer = io.BytesIO()
    torch.jit.save(to_torchscript(model), buffer)  # a saved copy: scripting shares the live parameters
    buffer.seek(0)
    scripted = torch.jit.load(buffer)
    assert check_export(model, scripted) < 1e-2
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(torch.randn_like(p))  # a uniform shift would leave softmax unchanged
    with pytest.raises(RuntimeError, match="Export check failed"):
        check_export(model, scripted)


def test_load_model_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_model(tmp_path / "nothing.pt")


def test_checkpoint_keeps_the_trained_preprocessing(trained_run):
    from dogbreed.backbones import preprocess_for
    from dogbreed.predict import load_checkpoint

    # MobileNetV2 IMAGENET1K_V1 resizes to 256; loading with weights=None must not switch to DEFAULT's 232.
    model = load_checkpoint(trained_run["best_checkpoint"])
    assert model.preprocess == preprocess_for("mobilenet_v2", "IMAGENET1K_V1")
    assert model.preprocess.resize_size == 256
