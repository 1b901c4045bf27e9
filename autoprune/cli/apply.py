"""The `apply` command: prune a dense checkpoint by a plan, fine-tune, save, export."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from autoprune.cli.console import run_job, stderr, stdout
from autoprune.cli.options import (
    choice_option,
    count_option,
    data_dir_option,
    device_option,
    file_option,
    out_option,
    positive_option,
    seed_option,
    threads_option,
    trust_code_option,
)
from autoprune.registry import CRITERIA, EXPORTS


@click.command()
@click.argument("plan", type=click.Path(dir_okay=False, path_type=Path))
@file_option("--checkpoint", help="Dense checkpoint (default: the one named in best_trial.json).")
@choice_option(
    "--criterion",
    CRITERIA.names,
    "l1",
    "Which channels to keep; auto tries l1, l2 and bn_gamma on the search split and keeps the best.",
)
@count_option("--finetune-epochs", 0, minimum=0)
@click.option("--kd", is_flag=True, help="Fine-tune with knowledge distillation from the dense model.")
@positive_option("--lr", 0.01, "Fine-tune learning rate.")
@count_option("--batch-size", 64)
@click.option(
    "--export",
    type=click.Choice(EXPORTS.names),
    default=None,
    help="Also write a deployable file beside --out.",
)
@data_dir_option("Where the checkpoint's dataset lives.")
@seed_option()
@out_option("pruned.pt")
@click.option(
    "--no-dense-eval",
    "dense_eval",
    is_flag=True,
    flag_value=False,
    default=True,
    help="Do not evaluate the dense model: its cached test accuracy (by checkpoint sha256), else "
    "the one its checkpoint recorded. The dense figures are cached either way.",
)
@click.option("--no-latency", "latency", is_flag=True, flag_value=False, default=True, help="Time no model.")
@device_option
@threads_option
@trust_code_option
def apply(plan, out, **options) -> None:
    """Build the physically smaller network from PLAN (best_trial.json or a plan JSON).

    Example: autoprune apply runs/resnet20-digits-flops0.5/best_trial.json --finetune-epochs 5 --out pruned.pt
    """
    from autoprune.jobs import apply_plan_file

    report = run_job(apply_plan_file, plan, out, **options)
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
            "-"
            if r.latency_ms is None
            else f"{r.latency_ms:.1f} ms ({r.latency_ms / dense.latency_ms:.2f}x)",
        ]
        if predicted_on:
            cells.append(f"{r.predicted_ms:.2f} ms ({r.predicted_ms / dense.predicted_ms:.3f})")
        table.add_row(*cells, "-" if r.accuracy is None else f"{r.accuracy:.2%}")
    stdout.print(table)
    if predicted_on:
        stdout.print(f"predicted latency: by the search's latency table ({predicted_on})")
