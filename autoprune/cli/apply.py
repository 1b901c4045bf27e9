"""The `apply` command: prune a dense checkpoint by a plan, fine-tune, save, export."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from autoprune.cli.console import RichReporter, stderr, stdout
from autoprune.cli.options import device_option, trust_code_option
from autoprune.registry import CRITERIA, EXPORTS


@click.command()
@click.argument("plan", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Dense checkpoint (default: the one named in best_trial.json).",
)
@click.option(
    "--criterion",
    type=click.Choice(CRITERIA.names),
    default="l1",
    show_default=True,
    help="Which channels to keep; auto tries l1, l2 and bn_gamma on the search split and keeps the best.",
)
@click.option("--finetune-epochs", type=click.IntRange(0), default=0, show_default=True)
@click.option("--kd", is_flag=True, help="Fine-tune with knowledge distillation from the dense model.")
@click.option(
    "--lr",
    type=click.FloatRange(0, min_open=True),
    default=0.01,
    show_default=True,
    help="Fine-tune learning rate.",
)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option(
    "--export",
    type=click.Choice(EXPORTS.names),
    default=None,
    help="Also write a deployable file beside --out.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the checkpoint's dataset lives.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("pruned.pt"), show_default=True
)
@device_option
@trust_code_option
def apply(
    plan,
    checkpoint,
    criterion,
    finetune_epochs,
    kd,
    lr,
    batch_size,
    export,
    data_dir,
    seed,
    out,
    device,
    trust_code,
) -> None:
    """Build the physically smaller network from PLAN (best_trial.json or a plan JSON).

    Example: autoprune apply runs/resnet20-digits-flops0.5/best_trial.json --finetune-epochs 5 --out pruned.pt
    """
    from autoprune.jobs import apply_plan_file

    report = apply_plan_file(
        plan,
        out,
        checkpoint=checkpoint,
        criterion=criterion,
        finetune_epochs=finetune_epochs,
        kd=kd,
        lr=lr,
        batch_size=batch_size,
        export=export,
        data_dir=data_dir,
        device=device,
        seed=seed,
        reporter=RichReporter(),
        trust_code=trust_code,
    )
    for note in report.notes:
        stderr.print(note)
    print_table(report.rows, report.predicted_on)
    stdout.print(f"saved {report.out}" + (f" and {report.exported}" if report.exported else ""))


def print_table(rows, predicted_on: str | None = None) -> None:
    """FLOPs, params, measured latency (and the latency table's prediction, when the plan has
    one) and accuracy of each row, with ratios to the dense row."""
    dense = rows[0]
    table = Table(title="before / after")
    columns = ["model", "FLOPs (MACs)", "params", "CPU latency b64 (measured)"]
    if predicted_on:
        columns.append("predicted latency")
    for column in (*columns, "test accuracy"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        cells = [
            r.label,
            f"{r.flops / 1e6:.2f} M ({r.flops / dense.flops:.3f})",
            f"{r.params / 1e3:.1f} k ({r.params / dense.params:.3f})",
            f"{r.latency_ms:.1f} ms ({r.latency_ms / dense.latency_ms:.2f}x)",
        ]
        if predicted_on:
            cells.append(f"{r.predicted_ms:.2f} ms ({r.predicted_ms / dense.predicted_ms:.3f})")
        table.add_row(*cells, "-" if r.accuracy is None else f"{r.accuracy:.2%}")
    stdout.print(table)
    if predicted_on:
        stdout.print(f"predicted latency: by the search's latency table ({predicted_on})")
