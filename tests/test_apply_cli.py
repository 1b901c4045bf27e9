"""`autoprune apply`: plan file -> pruned, fine-tuned, saved and exported model with a before/after table."""

from __future__ import annotations

import json

import torch

from autoprune import create_model
from autoprune.checkpoint import load_model
from autoprune.flops import measured_macs
from autoprune.search_spaces import space_for
from autoprune.surgery import load_pruned


def _plan_file(tmp_path, checkpoint, keep=0.5):
    model, ckpt = load_model(checkpoint)
    space = space_for(model, "resnet20", 32, 10)
    path = tmp_path / "plan.json"
    space.uniform(keep).save(path)
    return path, model


def test_apply_a_plain_plan_with_finetune_and_export(run_cli, tmp_path, digits_checkpoint):
    plan, dense = _plan_file(tmp_path, digits_checkpoint)
    out = tmp_path / "pruned.pt"
    result = run_cli(
        "apply",
        plan,
        "--checkpoint",
        digits_checkpoint,
        "--finetune-epochs",
        "1",
        "--kd",
        "--export",
        "torchscript",
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert result.code == 0, result.err
    for label in ("dense", "pruned (BN", "fine-tune 1", "FLOPs", "latency", "accuracy"):
        assert label in result.out, label
    pruned = load_pruned(out).model
    x = torch.randn(2, 3, 32, 32)
    scripted = torch.jit.load(str(out.with_suffix(".ts")))
    assert torch.allclose(scripted(x), pruned(x), atol=1e-5)
    assert measured_macs(pruned, x[:1]) < 0.6 * measured_macs(dense, x[:1])


def test_apply_reads_the_checkpoint_named_in_best_trial_json(run_cli, tmp_path, digits_checkpoint):
    plan, _ = _plan_file(tmp_path, digits_checkpoint, keep=0.75)
    document = json.loads(plan.read_text())
    document.update(checkpoint=str(digits_checkpoint), score={"accuracy": 0.5}, study={"name": "x"})
    best = tmp_path / "best_trial.json"
    best.write_text(json.dumps(document))
    result = run_cli("apply", best, "--out", tmp_path / "p.pt", "--device", "cpu")
    assert result.code == 0, result.err
    assert (tmp_path / "p.pt").is_file()


def test_bad_plans_are_one_line_errors(run_cli, tmp_path, digits_checkpoint):
    other = create_model("mobilenetv2", 10, 32)
    foreign = tmp_path / "foreign.json"
    space_for(other, "mobilenetv2", 32, 10).uniform(0.5).save(foreign)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    plain, _ = _plan_file(tmp_path, digits_checkpoint)
    for args, message in (
        ((foreign, "--checkpoint", digits_checkpoint), "mobilenetv2"),
        ((broken, "--checkpoint", digits_checkpoint), "not valid JSON"),
        ((plain,), "--checkpoint"),
        ((tmp_path / "missing.json",), "does not exist"),
    ):
        result = run_cli("apply", *args, "--out", tmp_path / "never.pt", "--device", "cpu")
        lines = result.err.strip().splitlines()
        assert result.code == 2 and len(lines) == 1 and message in lines[0], result.err
        assert not (tmp_path / "never.pt").exists()


def test_apply_with_criterion_auto(run_cli, tmp_path, digits_checkpoint):
    plan, _ = _plan_file(tmp_path, digits_checkpoint)
    out = tmp_path / "auto.pt"
    result = run_cli("apply", plan, "--checkpoint", digits_checkpoint, "--criterion", "auto",
                     "--out", out, "--device", "cpu")  # fmt: skip
    assert result.code == 0, result.err
    assert load_pruned(out).criterion in ("l1", "l2", "bn_gamma")  # the candidate auto kept


def test_cli_choices_are_the_registries():
    from autoprune.cli import cli
    from autoprune.registry import CHANNEL_CRITERIA, CRITERIA, SAMPLERS, SENSITIVITY_METHODS

    def choices(command: str, option: str) -> tuple[str, ...]:
        param = next(p for p in cli.commands[command].params if p.name == option)
        return tuple(param.type.choices)

    assert choices("apply", "criterion") == CRITERIA.names and "auto" in CRITERIA
    assert choices("search", "criterion") == CHANNEL_CRITERIA.names
    assert choices("search", "sampler") == SAMPLERS.names
    assert choices("sensitivity", "method") == SENSITIVITY_METHODS.names
