"""Re-rank the search's best candidates by a short fine-tune before one is named the best.

The recal proxy scores a candidate right after pruning, but the user fine-tunes it. Measured
in ``benchmarks/RESULTS.md`` ("Proxy fidelity"): a short fine-tune (a few hundred SGD steps
from the inherited weights, then top-1) ranks plans at least as faithfully as recal, and it
does not share recal's blind spot, a plan that cuts thin early layers hard and recovers from
it in fine-tuning. It costs ~10x a recal score, so it judges only the finalists.

After the trials, the ``top`` best distinct completed trials by proxy score are each pruned
from the dense model (the study's criterion), fine-tuned :attr:`Rerank.steps` steps on the
training data and scored top-1 on the search batches. The scores are stored in the study
(one user attribute), so every process and every resume sees them and a resume re-trains
only new finalists. :func:`reranked_best` names the best finalist once all of the current
finalists have a score; until then the best trial is the proxy's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial

from autoprune.errors import AutopruneError
from autoprune.progress import SILENT, Reporter
from autoprune.space import PruningSpace
from autoprune.surgery import apply_plan
from autoprune.train import finetune_steps

RERANK_ATTR = "autoprune.rerank"
"""Study user attribute: ``{"settings": Rerank as a dict, "scores": {trial number: top-1}}``."""
MAX_TOP = 100
RERANK_BATCH = 64
"""Batch size of the re-rank fine-tune on the CLI's training split."""
RERANK_LR = 0.01
"""Learning rate of the re-rank fine-tune (cosine-decayed over its steps, seed 0)."""


@dataclass(frozen=True)
class Rerank:
    """How finalists are re-ranked: ``top`` of them (0: not at all), ``steps`` SGD steps each."""

    top: int = 0
    steps: int = 200

    def __post_init__(self) -> None:
        if isinstance(self.top, bool) or not isinstance(self.top, int) or not 0 <= self.top <= MAX_TOP:
            raise AutopruneError(f"--rerank must be a whole number from 0 to {MAX_TOP}, got {self.top!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise AutopruneError(f"--rerank-steps must be a whole number >= 1, got {self.steps!r}")

    @classmethod
    def of(cls, config: dict[str, Any]) -> Rerank:
        """The settings a study's stored config names (none before re-ranking existed)."""
        return cls(int(config.get("rerank") or 0), int(config.get("rerank_steps") or cls.steps))


NO_RERANK = Rerank()
"""The proxy alone names the best trial."""


def finalists(trials: list[FrozenTrial], top: int) -> list[FrozenTrial]:
    """The ``top`` best ``trials`` by proxy score, one per distinct plan."""
    ranked = sorted(trials, key=lambda t: (t.values[0], -t.user_attrs.get("proxy_loss", 0.0)), reverse=True)
    seen: set[tuple[tuple[str, int], ...]] = set()
    out = []
    for t in ranked:
        key = tuple(sorted(t.user_attrs["channels"].items()))
        if key not in seen:
            seen.add(key)
            out.append(t)
        if len(out) == top:
            break
    return out


def stored_scores(study: optuna.Study, rerank: Rerank) -> dict[int, float]:
    """The re-rank scores the study holds for these settings (scores of other settings: none)."""
    held = study.user_attrs.get(RERANK_ATTR) or {}
    if held.get("settings") != asdict(rerank):
        return {}
    return {int(k): float(v) for k, v in held.get("scores", {}).items()}


def reranked_best(trials: list[FrozenTrial], scores: dict[int, float], top: int) -> FrozenTrial | None:
    """The finalist with the best re-rank score, when every finalist has one (else None)."""
    chosen = finalists(trials, top)
    if not chosen or any(t.number not in scores for t in chosen):
        return None
    return max(chosen, key=lambda t: scores[t.number])


def rerank_trials(
    study: optuna.Study,
    trials: list[FrozenTrial],
    rerank: Rerank,
    *,
    model: torch.nn.Module,
    space: PruningSpace,
    criterion: str,
    train: Iterable | None,
    score: Callable[[torch.nn.Module], float],
    device: torch.device,
    reporter: Reporter = SILENT,
) -> dict[int, float]:
    """Fine-tune and score each finalist that has no score yet; store each score as it comes
    (an interrupted re-rank keeps what it finished). ``train``: re-iterable (images, labels)
    batches; ``score(model)``: higher is better (top-1 on the search batches, or the user's
    score_fn). Returns all scores."""
    if train is None:
        raise AutopruneError("re-ranking (--rerank) needs (images, labels) training batches")
    scores = stored_scores(study, rerank)
    todo = [t for t in finalists(trials, rerank.top) if t.number not in scores]
    if not todo:
        return scores
    reporter.start(f"re-rank: {rerank.steps}-step fine-tune of the top {rerank.top}", len(todo))
    try:
        for trial in todo:
            plan = space.plan_from_channels(
                np.array([trial.user_attrs["channels"][g.id] for g in space.groups])
            )
            pruned = apply_plan(copy.deepcopy(model).cpu(), plan, criterion, space=space).model
            finetune_steps(pruned, train, rerank.steps, lr=RERANK_LR, device=device)
            with torch.no_grad():
                scores[trial.number] = float(score(pruned))
            # re-read before writing: another process may have stored finalists of its own
            merged = stored_scores(study, rerank) | scores
            held = {str(k): v for k, v in merged.items()}
            study.set_user_attr(RERANK_ATTR, {"settings": asdict(rerank), "scores": held})
            reporter.advance(1, trial=trial.number, top1=scores[trial.number])
    finally:
        reporter.finish()
    return stored_scores(study, rerank)
