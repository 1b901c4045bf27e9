"""Resume a study from Python: the same ``out`` and ``study_name`` (and the same model) continue it.

    python examples/resume_study.py [RUN_DIR]

Run 2 trials, then resume with ``trials=4`` (the study's total, not trials to add): 2 more run. The run folder is the CLI's (study.journal,
best_trial.json, trials.csv), so ``autoprune dashboard RUN_DIR`` shows it too.
"""

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import autoprune


def main(run_dir: str) -> int:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()  # fmt: skip
    images = torch.randn(64, 3, 16, 16)
    train = DataLoader(TensorDataset(images), batch_size=16)

    def score_fn(pruned: nn.Module) -> float:  # e.g. how close the pruned outputs stay to the dense ones
        return -float((pruned(images) - model(images)).pow(2).mean())

    kwargs = dict(flops=0.5, train_loader=train, score_fn=score_fn, out=run_dir, study_name="resume-demo")
    first = len(autoprune.search(model, images[:1], trials=2, **kwargs).study.trials)
    second = autoprune.search(model, images[:1], trials=4, **kwargs)  # resumes: same out and study_name
    print(f"{first} trials, then {len(second.study.trials)}; best score {second.score:.4f}")
    return len(second.study.trials)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/resume-example")
