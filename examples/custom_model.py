"""Prune a model of your own (not in autoprune's zoo) with your own DataLoader, scored by top-1 on a
held-out loader, then save the smaller model and load it back.

    python examples/custom_model.py [RUN_DIR]     # EXAMPLE_TRIALS: a smaller run

Anything torch.fx can trace works; what cannot be pruned exactly (here: nothing) is left whole
and listed in ``result.space.frozen`` with the reason.
"""

import os
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import autoprune

TRIALS = int(os.environ.get("EXAMPLE_TRIALS", 20))


class SmallNet(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32))
        self.head = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.body(x))  # a residual sum: stem and body are pruned as one group
        return self.fc(self.head(x).mean((2, 3)))


def loader(n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 4, (n,), generator=g)
    return DataLoader(TensorDataset(x + y.view(-1, 1, 1, 1), y), batch_size=16, shuffle=seed == 0)


def main(run_dir: str) -> autoprune.SearchResult:
    model = SmallNet().eval()  # your trained model
    train, held_out = loader(256, seed=0), loader(128, seed=1)
    result = autoprune.search(
        model, torch.randn(1, 3, 16, 16), flops=0.4, train_loader=train, search_loader=held_out,
        trials=TRIALS, out=run_dir, progress=lambda e: e.kind == "note" and print(e.message),
    )  # fmt: skip
    pruned = autoprune.apply_plan(model, result.plan)  # .model is autoprune.prune(model, result.plan)
    path = autoprune.save_pruned(os.path.join(run_dir, "pruned.pt"), pruned)
    again = autoprune.load_pruned(path, SmallNet()).model  # a dense instance rebuilds the architecture
    print(f"top-1 {result.score:.3f} at {result.cost['flops_ratio']:.2f}x FLOPs: {result.plan.channels}")
    print(f"saved {path}; reloaded with {sum(p.numel() for p in again.parameters()):,} params")
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/custom-model-example")
