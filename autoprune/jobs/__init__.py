"""Whole jobs, shared by the CLI and the Python API: each takes plain values and returns a result.

* :mod:`~autoprune.jobs.dense`: train a dense model, describe a checkpoint;
* :mod:`~autoprune.jobs.checkpoint`: the dense checkpoint a job needs, trained first if missing;
* :mod:`~autoprune.jobs.sensitivity`: sensitivity per block or group (+ a depth plan);
* :mod:`~autoprune.jobs.search`: an Optuna study over keep ratios (what it stores:
  :mod:`~autoprune.jobs.study`; its trials: :mod:`~autoprune.jobs.trials`);
* :mod:`~autoprune.jobs.worker`: workers joining a study;
* :mod:`~autoprune.jobs.apply`: prune by a plan, fine-tune, save and export;
* :mod:`~autoprune.jobs.latency`: latency tables (``autoprune latency-table``, a search's table).

Jobs build spaces only through :func:`autoprune.search_spaces.space_for` and never print.
"""

from autoprune.jobs.apply import ApplyReport, ModelReport, apply_plan_file
from autoprune.jobs.checkpoint import DenseRecipe, ensure_checkpoint
from autoprune.jobs.dense import DenseResult, describe_checkpoint, import_weights, train_dense
from autoprune.jobs.latency import latency_table_job
from autoprune.jobs.search import SearchConfig, SearchResult, run_search
from autoprune.jobs.sensitivity import SensitivityJob, SensitivityJobResult, run_sensitivity_job
from autoprune.jobs.threads import torch_threads
from autoprune.jobs.worker import run_worker

__all__ = [
    "ApplyReport",
    "DenseRecipe",
    "DenseResult",
    "ModelReport",
    "SearchConfig",
    "SearchResult",
    "SensitivityJob",
    "SensitivityJobResult",
    "apply_plan_file",
    "describe_checkpoint",
    "ensure_checkpoint",
    "import_weights",
    "latency_table_job",
    "run_search",
    "run_sensitivity_job",
    "run_worker",
    "torch_threads",
    "train_dense",
]
