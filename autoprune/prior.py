"""Prior keep ratios from sensitivity (SBPF-style: more sensitive keeps more).

With Δ_g a group's sensitivity, ŝ_g = Δ_g / max Δ (negative Δ counts as 0), the
*preference* of group g is p_g = ε + ŝ_g, and its keep ratio at global scale α is

    r_g(α) = clip(r_min + (1 − r_min) · α · p_g, r_min, 1)

with defaults r_min = 0.1 and ε = 0.05 (ε keeps an insensitive group from being
starved outright). The budget projection picks α; the search multiplies p_g.
The uniform prior is p_g = 1 for every group.
"""

from __future__ import annotations

import numpy as np

R_MIN = 0.1
EPSILON = 0.05


def preferences_from_sensitivity(deltas: np.ndarray, epsilon: float = EPSILON) -> np.ndarray:
    """p_g = ε + Δ_g / max Δ, with Δ clipped at 0; all-insensitive groups give a uniform prior."""
    deltas = np.clip(np.asarray(deltas, dtype=np.float64), 0.0, None)
    top = deltas.max(initial=0.0)
    normalized = deltas / top if top > 0 else np.ones_like(deltas)
    return epsilon + normalized


def uniform_preferences(n_groups: int) -> np.ndarray:
    return np.ones(n_groups, dtype=np.float64)


def keep_ratios(alpha: float | np.ndarray, preferences: np.ndarray, r_min: float = R_MIN) -> np.ndarray:
    """r_g(α) for one α (shape (G,)) or a column of αs (shape (A, 1) -> (A, G))."""
    return np.clip(r_min + (1.0 - r_min) * np.asarray(alpha) * preferences, r_min, 1.0)
