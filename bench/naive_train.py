"""The seeds' way, as a baseline: ImageFolder, Resize 256, CenterCrop 224, frozen ResNet-50, fp32, SGD.

Every epoch decodes every JPEG and runs the whole frozen backbone again. Used by bench/train.py.

    python bench/naive_train.py DATA_ROOT --epochs 5 [--arch resnet50] [--lr 0.01] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms


def loaders(root: str, batch_size: int, workers: int) -> dict[str, DataLoader]:
    tf = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    return {
        split: DataLoader(
            datasets.ImageFolder(f"{root}/{split}", tf),
            batch_size=batch_size,
            shuffle=split == "train",
            num_workers=workers,
        )
        for split in ("train", "valid", "test")
    }


def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    model.eval()
    loss, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    return loss / n, correct / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    started = time.perf_counter()
    data = loaders(args.root, args.batch_size, args.workers)
    model = models.get_model(
        args.arch, weights=None
    )  # the seeds load IMAGENET1K weights: same cost per image
    for param in model.parameters():
        param.requires_grad = False
    model.fc = nn.Linear(model.fc.in_features, len(data["train"].dataset.classes))
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=args.lr, momentum=0.9)
    for epoch in range(args.epochs):
        model.train()
        for x, y in data["train"]:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        val_loss, val_acc = evaluate(model, data["valid"])
        print(f"epoch={epoch} val_loss={val_loss:.4f} val_acc={val_acc:.4f}", flush=True)
    test_loss, test_acc = evaluate(model, data["test"])
    print(json.dumps({"wall_s": time.perf_counter() - started, "val_acc": val_acc, "test_acc": test_acc}))


if __name__ == "__main__":
    main()
