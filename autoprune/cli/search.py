"""Commands about the search: `search`, `worker`, `dashboard`."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import click

from autoprune.cli.console import RichReporter, stderr, stdout
from autoprune.cli.options import (
    arch_option,
    choice_option,
    count_option,
    data_options,
    dense_checkpoint_option,
    device_option,
    file_option,
    folder_option,
    input_size_option,
    names_user_builder,
    positive_option,
    seed_option,
    threads_option,
    train_missing_option,
    trust_code_option,
    weights_option,
)
from autoprune.registry import (
    CHANNEL_CRITERIA,
    MAX_TRIALS,
    PRIORS,
    PROXIES,
    PROXY_METRICS,
    SAMPLERS,
    SEARCH_SPACES,
    SENSITIVITY_METHODS,
    TRIAL_PRUNERS,
)


class TrialsInterrupt:
    """Ctrl-C that stops at once during setup and finishes the current trial once trials run.

    ``arm()`` (passed to the job as ``on_trials_start``) installs :func:`graceful_interrupt`'s
    handler; until then the default handler raises KeyboardInterrupt immediately, so dense
    training or the sensitivity prior stop within one batch. Use it as a context manager.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._context = None

    def arm(self) -> None:
        if self._context is None:
            self._context = graceful_interrupt(self.stop)
            self._context.__enter__()

    def __enter__(self) -> TrialsInterrupt:
        return self

    def __exit__(self, *exc) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None


@contextmanager
def graceful_interrupt(stop: threading.Event | None = None):
    """First Ctrl-C: finish the current trial, then stop. Second Ctrl-C: abort now."""
    stop = stop if stop is not None else threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        stop.set()
        stderr.print("\nstopping after the current trial (Ctrl-C again to abort it)")

    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_result(result) -> None:
    if result.interrupted:
        stdout.print(
            f"stopped early after {result.trials_done} trial(s); the study and outputs are consistent"
        )
    best = result.best
    if best is None:
        stdout.print(f"no completed trial yet in study {result.study_name!r}")
        return
    attrs = best.user_attrs
    latency = ""
    if "latency_ratio" in attrs:
        latency = f" / latency {attrs['latency_ratio']:.3f} ({attrs['latency_ms']:.2f} ms, predicted)"
    stdout.print(
        f"best trial #{best.number}: proxy accuracy {best.values[0]:.2%}, "
        f"FLOPs {attrs['flops_ratio']:.3f} / params {attrs['params_ratio']:.3f}{latency} of dense"
    )
    if result.rerank_accuracy is not None:
        stdout.print(f"  chosen by the re-rank: top-1 {result.rerank_accuracy:.2%} after a short fine-tune")
    stdout.print(f"outputs in {result.run_dir}/ (best_trial.json, trials.csv, summary.png)")
    stdout.print(f"next: autoprune apply {result.run_dir / 'best_trial.json'} --out pruned.pt")
    stdout.print(f"watch: autoprune dashboard {result.run_dir}")


@click.command()
@arch_option()
@weights_option
@click.option(
    "--flops", type=float, default=None, help="FLOPs budget as a fraction of the dense model, 0 < x <= 1."
)
@click.option(
    "--params", type=float, default=None, help="Params budget as a fraction of the dense model, 0 < x <= 1."
)
@click.option(
    "--latency",
    type=float,
    default=None,
    help="Latency budget as a fraction of the dense model's measured latency on the target device "
    "(--device, torch threads, --batch-size), predicted by a latency table, 0 < x <= 1.",
)
@click.option(
    "--latency-table",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Table from `autoprune latency-table` (its widths set each group's rounding). Default with "
    "--latency: RUN_DIR/latency_table.json, built there first.",
)
@data_options("cifar10")
@input_size_option()
@dense_checkpoint_option("RUN_DIR/dense.pt, trained there first if missing, and said so")
@train_missing_option
@count_option("--dense-epochs", 30, "Epochs when the dense model is trained first.")
@file_option(
    "--sensitivity", help="sens.json from `autoprune sensitivity --unit group` on the same checkpoint."
)
@click.option(
    "--force",
    is_flag=True,
    help="Use a --sensitivity file computed on another checkpoint than this one, or a --latency-table "
    "measured on another device or runtime; rebuild a cached RUN_DIR/latency_table.json made for "
    "another target (device, runtime, threads, batch size).",
)
@choice_option(
    "--sensitivity-method",
    SENSITIVITY_METHODS.names,
    "sr-init",
    "Computed on the fly when no --sensitivity file is given.",
)
@choice_option("--prior", PRIORS.names, "sensitivity", "Prior keep ratios: from sensitivity, or uniform.")
@choice_option("--space", SEARCH_SPACES.names, "group", "Per-group or per-stage multipliers.")
@choice_option("--sampler", SAMPLERS.names, "tpe", "nsga2 searches a Pareto front of accuracy vs FLOPs.")
@choice_option("--pruner", TRIAL_PRUNERS.names, "wilcoxon", "Stops weak trials early.")
@choice_option("--proxy", PROXIES.names, "recal")
@choice_option(
    "--proxy-metric",
    PROXY_METRICS.names,
    "acc",
    "supernet proxy: recalibrated top-1, or minus the summed stage losses.",
)
@count_option(
    "--supernet-steps",
    None,
    "supernet proxy: training steps when the run folder has no supernet.pt (default 5 epochs).",
)
@choice_option("--criterion", CHANNEL_CRITERIA.names, "l1", "Which channels a candidate keeps.")
@count_option(
    "--rerank",
    0,
    "After the trials, fine-tune the best N distinct plans for --rerank-steps SGD steps each and "
    "name the best of them by top-1 on the search split (0: the proxy decides).",
    minimum=0,
)
@count_option("--rerank-steps", 200, "Fine-tune steps per plan for --rerank (batch 64, lr 0.01).")
@click.option(
    "--trials",
    type=click.IntRange(1, MAX_TRIALS),
    default=100,
    show_default=True,
    help="Finished trials (complete or pruned) the whole study gets, stored in it: running the "
    "command again resumes and runs only the missing ones, and workers stop at it too.",
)
@positive_option("--timeout", None, "Stop starting trials after this many seconds.")
@seed_option(0, "Makes a single-worker run reproducible.")
@click.option(
    "--study",
    default=None,
    help="Study name; an existing one is resumed (default: from arch, dataset, budget).",
)
@click.option(
    "--storage",
    default=None,
    help="sqlite:///F, postgresql://..., redis://... (default: a journal file in the run folder).",
)
@folder_option("--out", help="Run folder (default runs/<study>).")
@count_option("--recal-batches", 8, "Training batches for BN recalibration.")
@count_option("--batch-size", 128)
@count_option("--search-images", None, "Search-split images per trial (default: all).")
@device_option
@threads_option
@trust_code_option
def search(threads, **options) -> None:
    """Search per-group channel counts under a budget with an Optuna study.

    Example: autoprune search --arch mobilenetv2 --flops 0.67

    Writes runs/<study>/: study.journal, best_trial.json, trials.csv, summary.png,
    per-trial charts (artifacts/). Ctrl-C stops after the current trial.
    """
    from autoprune.jobs import SearchConfig, run_search, torch_threads

    options["trust_code"] = options["trust_code"] or names_user_builder(options["arch"])
    config = SearchConfig(**{k: str(v) if isinstance(v, Path) else v for k, v in options.items()})
    with TrialsInterrupt() as interrupt, torch_threads(threads):
        result = run_search(config, RichReporter(), interrupt.stop, on_trials_start=interrupt.arm)
    _print_result(result)


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--storage",
    default=None,
    help="The study's storage URL, password included (default: RUN_DIR/study.journal). "
    "best_trial.json names the storage with its password hidden (***), so pass the real URL here.",
)
@click.option("--study", default=None, help="Study name (needed when the storage holds several).")
@click.option(
    "--trials",
    type=click.IntRange(1, MAX_TRIALS),
    default=None,
    help="At most this many trials from this worker (default: until the study has the number "
    "of trials its search set).",
)
@positive_option("--timeout", None)
@seed_option(None, "Sampler seed for this worker (default: random).")
@device_option
@threads_option
@trust_code_option
def worker(run_dir, threads, **options) -> None:
    """Run trials for an existing study, from another process or machine.

    Example: autoprune worker runs/resnet20-digits-flops0.5 --trials 20

    The study's model is built from its stored config; a module:callable arch there is built
    only with this worker's own --trust-code (the stored config never grants it).
    """
    from autoprune.jobs import run_worker, torch_threads

    with TrialsInterrupt() as interrupt, torch_threads(threads):
        result = run_worker(
            run_dir, reporter=RichReporter(), stop=interrupt.stop, on_trials_start=interrupt.arm, **options
        )
    _print_result(result)


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--storage", default=None, help="The study's storage URL (default: RUN_DIR/study.journal).")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to bind; loopback unless you say so."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
def dashboard(run_dir, storage, host, port) -> None:
    """Serve optuna-dashboard on a run's study (with its per-trial charts).

    Example: autoprune dashboard runs/resnet20-digits-flops0.5
    """
    from autoprune.search.dashboard import dashboard_server

    server, url = dashboard_server(run_dir, storage, host, port)
    stdout.print(f"optuna-dashboard on {url}  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
