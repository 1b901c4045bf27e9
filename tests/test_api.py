"""The Python API (autoprune.search / sensitivity / prune): the user's metric is what is optimized,
plans meet the budget, prune == apply_plan, studies resume, workers refuse API studies."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import autoprune
from autoprune.errors import AutopruneError
from autoprune.flops import measured_macs, param_count
from autoprune.jobs import run_worker
from autoprune.progress import ProgressEvent

X = torch.randn(1, 3, 16, 16)


class Net(nn.Module):
    """A model that is not in the zoo."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv3, self.bn3 = nn.Conv2d(16, 24, 3, padding=1, stride=2), nn.BatchNorm2d(24)
        self.fc = nn.Linear(24, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


class Counting:
    """A loader that counts the batches drawn from it."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader, self.drawn = loader, 0

    def __iter__(self):
        for batch in self.loader:
            self.drawn += 1
            yield batch


@pytest.fixture(scope="module")
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def _loader(n: int = 32, seed: int = 1) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 4, (n,), generator=g))
    return DataLoader(data, batch_size=8)


def _wide_conv2(model: nn.Module) -> float:
    """Rewards keeping conv2 wide, and nothing else."""
    return model.conv2.out_channels / 16


def test_score_fn_is_what_is_optimized(net: Net, tmp_path) -> None:
    train = Counting(_loader())
    events: list[ProgressEvent] = []
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = autoprune.search(
        net, X, flops=0.5, train_loader=train, score_fn=_wide_conv2, trials=8, out=tmp_path / "run",
        prior="uniform", device="cpu", recal_batches=2, progress=events.append,
    )  # fmt: skip
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # the caller's model
    assert train.drawn >= 2  # BN recalibration drew from the user's train_loader
    uniform = result.study.trials[0].user_attrs["channels"]["conv2"]
    assert result.study.trials[0].params["m:conv2"] == 0.0  # the first trial is the uniform plan
    assert result.plan.channels["conv2"] > uniform
    assert result.score == pytest.approx(result.plan.channels["conv2"] / 16)
    assert result.score == max(t.value for t in result.study.trials if t.value is not None)
    assert len(result.study.trials) == 8 and result.trials_done == 8
    assert result.cost["flops_ratio"] <= 0.5 + 1e-9
    best = json.loads(result.best_trial_path.read_text())
    assert best["score"]["score_fn"].endswith(":_wide_conv2") and best["checkpoint"] is None
    assert {e.kind for e in events} >= {"start", "advance", "finish"}
    assert (tmp_path / "run" / "trials.csv").is_file()


def test_plan_meets_budget_and_prune_matches_apply_plan(net: Net, tmp_path) -> None:
    result = autoprune.search(
        net, X, flops=0.6, params=0.7, train_loader=_loader(), search_loader=_loader(seed=2), trials=3,
        out=tmp_path / "run", prior="uniform", device="cpu", recal_batches=2,
    )  # fmt: skip
    small = autoprune.prune(net, result)
    assert measured_macs(small, X) <= 0.6 * measured_macs(net, X)
    assert param_count(small) <= 0.7 * param_count(net)
    reference = autoprune.apply_plan(net, result.plan, "l1", example_inputs=X).model.eval()
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(small.eval()(x), reference(x))
    same = autoprune.prune(net, result.best_trial_path, example_input=X)  # best_trial.json works too
    assert torch.equal(same.eval()(x), reference(x))


def test_resume_checks_the_model_and_workers_refuse(net: Net, tmp_path, run_cli) -> None:
    kwargs = dict(flops=0.5, train_loader=_loader(), score_fn=_wide_conv2, out=tmp_path / "run",
                  study_name="s", prior="uniform", device="cpu", recal_batches=1)  # fmt: skip
    autoprune.search(net, X, trials=2, **kwargs)
    again = autoprune.search(net, X, trials=4, **kwargs)  # trials is the study's total: 2 more
    assert len(again.study.trials) == 4 and again.trials_done == 2
    other = Net()
    with pytest.raises(AutopruneError, match="another model"):
        autoprune.search(other, X, trials=1, **kwargs)
    with pytest.raises(AutopruneError, match="in-memory model"):
        run_worker(tmp_path / "run", trials=1, device="cpu")
    worker = run_cli("worker", tmp_path / "run", "--trials", "1", "--device", "cpu")
    assert worker.code == 2 and "in-memory model" in worker.err and len(worker.err.strip().splitlines()) == 1
    cli = run_cli("search", "--arch", "net", "--flops", "0.5", "--out", tmp_path / "run", "--study", "s")
    assert cli.code == 2 and "resume it from Python" in " ".join(cli.err.split())


def test_sensitivity_by_score_fn_and_by_loader(net: Net) -> None:
    by_metric = autoprune.sensitivity(net, X, _wide_conv2, seeds=1, device="cpu")
    assert {u.id for u in by_metric.units} == {"conv1", "conv2", "conv3"}
    assert all(u.delta == 0.0 for u in by_metric.units)  # redrawing weights keeps the widths
    by_top1 = autoprune.sensitivity(net, X, _loader(), seeds=2, device="cpu")
    assert by_top1.images == 32 and len(by_top1.units[0].per_seed) == 2


def test_search_computes_the_prior_from_score_fn(net: Net, tmp_path) -> None:
    def energy(model: nn.Module) -> float:  # any metric of the outputs
        return float(model(torch.ones(2, 3, 16, 16)).abs().mean())

    result = autoprune.search(
        net, X, flops=0.5, train_loader=_loader(), score_fn=energy, trials=2, out=tmp_path / "run",
        device="cpu", recal_batches=1, sensitivity_seeds=1,
    )  # fmt: skip
    assert result.study.trials[0].params["prior_weight"] == 1.0  # the prior, from energy's drops
    assert result.plan is not None
    sens = autoprune.sensitivity(net, X, energy, seeds=1, device="cpu")  # given: not computed again
    given = autoprune.search(
        net, X, flops=0.5, train_loader=_loader(), score_fn=energy, trials=1, out=tmp_path / "given",
        device="cpu", recal_batches=1, sensitivity=sens,
    )  # fmt: skip
    assert given.study.user_attrs["autoprune.config"]["preferences"] == pytest.approx(
        result.study.user_attrs["autoprune.config"]["preferences"]
    )


def test_untraceable_model_is_one_error(tmp_path) -> None:
    class Branchy(Net):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return super().forward(x)
            return super().forward(-x)

    with pytest.raises(AutopruneError):
        autoprune.search(Branchy(), X, flops=0.5, train_loader=_loader(), score_fn=_wide_conv2,
                         trials=1, out=tmp_path / "run", device="cpu")  # fmt: skip
    assert not (tmp_path / "run").exists()
