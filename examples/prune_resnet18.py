"""Prune a torchvision resnet18 by your own metric: top-1 on a held-out ImageFolder (any
``score_fn(model) -> float``, higher is better, works the same: a detector's mAP, minus a loss).

    python examples/prune_resnet18.py [RUN_DIR]     # EXAMPLE_TRIALS, EXAMPLE_SIZE: smaller runs

Offline: the weights are random and the images are written to a temporary folder; with your
own trained resnet18 and ImageFolder, only the first lines change.
"""

import os
import sys
import tempfile

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import autoprune

TRIALS, SIZE = int(os.environ.get("EXAMPLE_TRIALS", 20)), int(os.environ.get("EXAMPLE_SIZE", 64))


def write_image_folder(root: str, classes: int = 3, per_class: int = 8) -> str:
    """A synthetic ImageFolder: root/<class>/<n>.png."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        os.makedirs(f"{root}/class{c}", exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) // (c + 1)
            Image.fromarray(pixels).save(f"{root}/class{c}/{i}.png")
    return root


def main(run_dir: str) -> autoprune.SearchResult:
    root = write_image_folder(tempfile.mkdtemp())
    folder = datasets.ImageFolder(root, transforms.ToTensor())
    train = DataLoader(folder, batch_size=8, shuffle=True)
    val = DataLoader(folder, batch_size=8)  # use a held-out split of your own
    model = torchvision.models.resnet18(num_classes=3).eval()  # or load your trained weights

    def top1(pruned: torch.nn.Module) -> float:  # any metric of the pruned model, higher is better
        device = next(pruned.parameters()).device
        hits = sum((pruned(x.to(device)).argmax(1) == y.to(device)).sum().item() for x, y in val)
        return hits / len(folder)

    result = autoprune.search(
        model, torch.randn(1, 3, SIZE, SIZE), flops=0.5, train_loader=train, score_fn=top1,
        trials=TRIALS, out=run_dir, sensitivity_seeds=1,
    )  # fmt: skip
    small = autoprune.prune(model, result.plan)  # the physically smaller resnet18
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"score {result.score:.3f} at {result.cost['flops_ratio']:.2f}x FLOPs ({result.best_trial_path})")
    print(f"params: {count(model):,} -> {count(small):,}")
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/resnet18-example")
