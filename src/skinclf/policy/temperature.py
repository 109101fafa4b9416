"""Temperature scaling (Guo et al., ICML 2017), fitted on validation predictions.

Own code: scikit-learn's calibrators (sigmoid, isotonic) do not include temperature scaling,
which is a one-parameter NLL fit here with scipy's bounded Brent search.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from skinclf.contracts.scores import log_probs

T_MIN, T_MAX = 0.01, 100.0


def temperature_nll(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    """Mean NLL of softmax(logits / temperature)."""
    lp = log_probs(logits, temperature)
    return float(-lp[np.arange(len(y_true)), y_true].mean())


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature T in [0.01, 100] minimising the NLL of softmax(logits / T).

    Optimised over log T with bounded Brent search (the NLL is smooth and unimodal in log T).
    """
    logits = np.asarray(logits, dtype=np.float64)
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        raise ValueError("cannot fit a temperature on zero samples")
    res = minimize_scalar(
        lambda log_t: temperature_nll(logits, y_true, float(np.exp(log_t))),
        bounds=(np.log(T_MIN), np.log(T_MAX)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(res.x))
