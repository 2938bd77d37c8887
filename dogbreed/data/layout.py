"""Find a dataset's splits and run the cheap structural checks (class sets, empty classes).

Shared by the DataModule (before fitting) and `python -m dogbreed.data check`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The extensions torchvision's ImageFolder loads (so a class the check accepts is a class training sees).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "valid": ("valid", "val"),
    "test": ("test",),
}


class DatasetError(ValueError):
    """The dataset on disk cannot be trained on; the message names the folder and the fix."""


@dataclass(frozen=True)
class Layout:
    root: Path
    splits: dict[str, Path]  # canonical split name -> folder


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def find_splits(root: str | Path, required: tuple[str, ...] = ("train", "valid", "test")) -> Layout:
    """Locate train / valid (or val) / test under ``root``; raise DatasetError naming what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"Dataset not found: {root.resolve()} does not exist. Get the dog dataset with "
            f"`python -m dogbreed.data download --dest {root.parent}`, or point data.root at an ImageFolder "
            "dataset with train/, valid/ (or val/) and test/ folders."
        )
    splits: dict[str, Path] = {}
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            if (root / alias).is_dir():
                splits[split] = root / alias
                break
    missing = [s for s in required if s not in splits]
    if missing:
        wanted = ", ".join("/".join(SPLIT_ALIASES[s]) for s in missing)
        raise DatasetError(
            f"{root.resolve()} has no {wanted} folder; expected train/, valid/ (or val/) and test/ inside it."
        )
    return Layout(root=root, splits=splits)


def class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def count_images(class_dir: Path) -> int:
    return sum(1 for p in class_dir.rglob("*") if p.is_file() and is_image_file(p))


def structural_problems(layout: Layout) -> list[str]:
    """Problems that would break training: differing class sets between splits and empty classes."""
    problems: list[str] = []
    classes = {split: class_folders(path) for split, path in layout.splits.items()}
    reference_split, reference = next(iter(classes.items()))
    if not reference:
        problems.append(f"{layout.splits[reference_split]} has no class folders")
    for split, names in classes.items():
        extra = sorted(set(names) - set(reference))
        lacking = sorted(set(reference) - set(names))
        if extra:
            problems.append(
                f"class folders in {layout.splits[split]} but not in {layout.splits[reference_split]}: "
                f"{', '.join(extra)}"
            )
        if lacking:
            problems.append(
                f"class folders in {layout.splits[reference_split]} but not in {layout.splits[split]}: "
                f"{', '.join(lacking)}"
            )
    for split, names in classes.items():
        for name in names:
            if count_images(layout.splits[split] / name) == 0:
                problems.append(f"empty class folder (no images): {layout.splits[split] / name}")
    return problems


def check_structure(layout: Layout) -> list[str]:
    """Raise DatasetError listing every structural problem; return the class names otherwise."""
    problems = structural_problems(layout)
    if problems:
        raise DatasetError(
            "The dataset cannot be used for training:\n  - "
            + "\n  - ".join(problems)
            + "\nFix the folders (every split needs the same non-empty class folders); "
            "`python -m dogbreed.data check ROOT` gives a full report."
        )
    return class_folders(layout.splits["train"])
