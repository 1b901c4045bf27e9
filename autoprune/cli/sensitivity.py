"""The `sensitivity` command: per-block / per-group SR-init, SBPF or BN-gamma, and depth pruning."""

from __future__ import annotations

import re

import click
from rich.table import Table

from autoprune.cli import options as opt
from autoprune.cli.console import run_job, stdout
from autoprune.registry import SENSITIVITY_METHODS, SENSITIVITY_UNITS

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'4GiB', '512MB', '2g', '1000000' -> bytes (k/M/G/T are powers of 1024)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a size like 4GiB or 512MB", param_hint="--max-memory")
    power = "kmgt".find(m.group(2).lower()) + 1 if m.group(2) else 0
    value = int(float(m.group(1)) * 1024**power)
    if value < 1:
        raise click.BadParameter("must be positive", param_hint="--max-memory")
    return value


def _parse_sigmas(text: str) -> list[float]:
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a comma-separated list of numbers", param_hint="--sigmas"
        ) from None
    if not values or any(not v > 0 for v in values):
        raise click.BadParameter("sigmas must be positive numbers", param_hint="--sigmas")
    return values


@click.command()
@opt.arch_option(required=False, help="Model name (default: the checkpoint's).")
@opt.weights_option
@opt.data_options("digits")
@opt.dense_checkpoint_option(
    "dense-ARCH-DATASET.pt next to --out, trained there first if missing and reused by later runs"
)
@opt.train_missing_option
@opt.choice_option("--method", SENSITIVITY_METHODS.names, "sr-init")
@opt.choice_option(
    "--unit",
    SENSITIVITY_UNITS.names,
    "block",
    "block: modules with a skip connection; group: channel groups.",
)
@opt.count_option("--seeds", 3, "Redraws per unit.")
@click.option(
    "--sigmas", default="0.1,0.25,0.5", show_default=True, help="SBPF noise levels (x std of each weight)."
)
@opt.count_option("--images", None, "Images of the search split (default: all; with --adaptive: the budget).")
@click.option(
    "--adaptive",
    is_flag=True,
    help="Evaluate images in chunks and stop once the ranking of units is settled (or --images is spent).",
)
@click.option(
    "--adaptive-target",
    type=click.FloatRange(0.0, 1.0),
    default=0.95,
    show_default=True,
    help="Settled: 9 in 10 bootstrap resamples rank the units with Spearman >= this.",
)
@click.option(
    "--max-memory",
    default="4GiB",
    show_default=True,
    help="Memory for cached activations plus one pass; caps the chunk size.",
)
@opt.count_option(
    "--chunk-size",
    None,
    "Images per chunk, overriding the default: on CPU up to 128, fewer when the model's largest "
    "activation would pass 32 MiB a chunk; 1024 on GPU; always within --max-memory.",
)
@click.option(
    "--exact",
    is_flag=True,
    help="No BN folding, channels_last or conv fusion: the plain model's arithmetic, bit for bit (slower).",
)
@click.option(
    "--prune-blocks",
    "tau",
    type=float,
    default=None,
    metavar="TAU",
    help="Write a depth Plan removing every removable block with drop <= TAU.",
)
@opt.count_option("--remove", None, "... or the K lowest.", minimum=0, metavar="K")
@opt.file_option("--plan-out", help="Where the depth Plan goes (default: --out with .plan.json).")
@opt.file_option(
    "--sensitivity",
    "from_json",
    help="Reuse a saved sens.json instead of computing (e.g. to try another --prune-blocks).",
)
@opt.seed_option(None, "Search-split seed (default: the checkpoint's).")
@opt.count_option("--epochs", 15, "If a dense model is trained.")
@opt.threads_option
@opt.device_option
@opt.out_option("sens.json")
@opt.file_option("--chart", help="PNG bar chart (default: --out with .png).")
@opt.trust_code_option
@click.pass_context
def sensitivity(ctx: click.Context, **options) -> None:
    """Measure how much each block or channel group matters (SR-init, SBPF, BN-gamma).

    Writes a JSON (the input of `autoprune search --sensitivity`) and a bar chart;
    with --prune-blocks/--remove also a depth Plan for `autoprune apply`.

    Example: autoprune sensitivity --checkpoint dense.pt --method sr-init --unit block --remove 3
    """
    from autoprune.jobs import SensitivityJob, run_sensitivity_job

    tau, remove_k = options["tau"], options.pop("remove")
    if tau is not None and remove_k is not None:
        raise click.UsageError("give either --prune-blocks TAU or --remove K, not both")
    if (tau is not None or remove_k is not None) and options["unit"] != "block":
        raise click.UsageError("depth pruning (--prune-blocks/--remove) needs --unit block")
    explicit_dataset = ctx.get_parameter_source("dataset") not in (
        click.core.ParameterSource.DEFAULT,
        click.core.ParameterSource.DEFAULT_MAP,
    )
    options.update(
        dataset=options["dataset"] if explicit_dataset else None,
        default_dataset=options["dataset"],
        remove_k=remove_k,
        sigmas=_parse_sigmas(options["sigmas"]),
        max_memory=parse_size(options["max_memory"]),
        trust_code=options["trust_code"] or opt.names_user_builder(options["arch"]),
    )
    _print_summary(run_job(run_sensitivity_job, SensitivityJob(**options)))


def _print_summary(result) -> None:
    sens = result.sensitivity
    ranked = sens.ranking()
    value = "mean |γ|" if sens.method == "bn-gamma" else "top-1 drop"
    table = Table(title=f"{sens.method} per {sens.unit}: most and least sensitive", title_justify="left")
    for col in ("rank", sens.unit, "stage", value, "± std", "loss rise"):
        table.add_column(col, justify="left" if col == sens.unit else "right")
    n = len(ranked)
    shown = list(range(n - 1, max(n - 6, -1), -1))
    low = [i for i in range(min(5, n) - 1, -1, -1) if i not in shown]
    for k, i in enumerate(shown + low):
        if k == len(shown) and low:
            table.add_row("…", "", "", "", "", "")
        u = sens[ranked[i]]
        loss = "" if u.loss_delta is None else f"{u.loss_delta:+.4f}"
        table.add_row(str(n - i), u.id, str(u.stage), f"{u.delta:+.4f}", f"{u.std:.4f}", loss)
    stdout.print(table)
    if sens.acc0 is not None:
        adaptive = " (adaptive)" if sens.adaptive else ""
        stdout.print(
            f"clean top-1 {sens.acc0:.2%} on {sens.images}{adaptive} of {sens.images_available} "
            f"search-split images; {len(sens.seeds)} seed(s); {sens.seconds:.1f} s"
        )
    stdout.print(f"sensitivity -> {result.json_path}")
    stdout.print(f"chart       -> {result.chart_path}")
    if result.plan_path is not None:
        removed = result.plan.removed_blocks
        stdout.print(
            f"depth plan  -> {result.plan_path}: removes {len(removed)} block(s)"
            + (f" ({', '.join(removed)})" if removed else "")
            + f", FLOPs {result.flops_ratio:.3f} / params {result.params_ratio:.3f} of dense"
        )
        stdout.print(f"next: autoprune apply {result.plan_path} --checkpoint {result.checkpoint}")
