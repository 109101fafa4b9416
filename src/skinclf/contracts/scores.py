"""Confidence scores: one small function each; higher always means more confident.

Logit/probability scores take arrays of shape (N, C) and return shape (N,). For an ensemble,
pass the log of the mean probabilities as logits (their softmax is the mean probabilities).

The names, and what each score needs, are registered in `skinclf.contracts.score_registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import log_softmax

from skinclf.contracts.predictions import Predictions, softmax
from skinclf.contracts.score_registry import AVERAGE_SCORES, logit_functions

_EPS = 1e-12

def msp(probs: np.ndarray) -> np.ndarray:
    """Maximum softmax probability."""
    return np.asarray(probs, dtype=np.float64).max(axis=-1)


def msp_ts(logits: np.ndarray, temperature: float) -> np.ndarray:
    """MSP after temperature scaling: max softmax(logits / T)."""
    return msp(softmax(logits, temperature))


def max_logit(logits: np.ndarray) -> np.ndarray:
    """Largest logit."""
    return np.asarray(logits, dtype=np.float64).max(axis=-1)


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Minus the free energy, T * logsumexp(logits / T) (Liu et al., NeurIPS 2020)."""
    from scipy.special import logsumexp

    z = np.asarray(logits, dtype=np.float64) / temperature
    return temperature * logsumexp(z, axis=-1)


def margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability."""
    top2 = np.sort(np.asarray(probs, dtype=np.float64), axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each probability row."""
    p = np.asarray(probs, dtype=np.float64)
    return -(p * np.log(np.clip(p, _EPS, None))).sum(axis=-1)


def neg_entropy(probs: np.ndarray) -> np.ndarray:
    """Minus the predictive entropy."""
    return -entropy(probs)


def doctor(probs: np.ndarray) -> np.ndarray:
    """DOCTOR (Granese et al., NeurIPS 2021): minus (1 - sum p^2) / sum p^2."""
    g = (np.asarray(probs, dtype=np.float64) ** 2).sum(axis=-1)
    return -(1.0 - g) / g


def mc_dropout_msp(probs_knc: np.ndarray) -> np.ndarray:
    """MC dropout: MSP of the mean over K stochastic passes; input shape (K, N, C)."""
    return msp(np.asarray(probs_knc, dtype=np.float64).mean(axis=0))


def mc_dropout_neg_mutual_information(probs_knc: np.ndarray) -> np.ndarray:
    """Minus the mutual information H(mean_k p_k) - mean_k H(p_k) over K passes (K, N, C)."""
    p = np.asarray(probs_knc, dtype=np.float64)
    return -(entropy(p.mean(axis=0)) - entropy(p).mean(axis=0))


def tta_msp(probs_vnc: np.ndarray) -> np.ndarray:
    """Test-time augmentation: MSP of the view-averaged probabilities, input (V, N, C)."""
    return msp(np.asarray(probs_vnc, dtype=np.float64).mean(axis=0))


def ensemble_msp(probs_rnc: np.ndarray) -> np.ndarray:
    """Deep ensemble: MSP of the run-averaged probabilities, input (R, N, C)."""
    return msp(np.asarray(probs_rnc, dtype=np.float64).mean(axis=0))


def _from_probs(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def score(logits: np.ndarray) -> np.ndarray:
        return fn(softmax(logits))

    score.__doc__ = fn.__doc__
    return score


SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = logit_functions(
    {
        "msp": _from_probs(msp),
        "max_logit": max_logit,
        "margin": _from_probs(margin),
        "neg_entropy": _from_probs(neg_entropy),
        "doctor": _from_probs(doctor),
        "energy": energy,
    }
)
"""Scores computable from one model's logits alone: name -> function(logits) -> (N,); the
registry's `logits` scores, checked at import."""


def compute_score(name: str, logits: np.ndarray, temperature: float | None = None) -> np.ndarray:
    """A logit-only score by name; `msp_ts` needs the fitted `temperature`."""
    if name == "msp_ts":
        if temperature is None:
            raise ValueError("msp_ts needs a temperature (fit it on validation logits)")
        return msp_ts(logits, temperature)
    if name not in SCORES:
        raise KeyError(f"unknown score {name!r}; known: {', '.join([*SCORES, 'msp_ts'])}")
    return SCORES[name](logits)


def score_values(
    p: Predictions, name: str, temperature: float | None = None, *, stored_msp_ts: bool = True
) -> np.ndarray | None:
    """A score on every row of a predictions file: its conf_<name> column, else computed from
    the logits (`msp_ts` at `temperature`); None when neither is possible.

    `stored_msp_ts=False` always recomputes `msp_ts` at `temperature` (evaluate's freshly
    fitted one), ignoring a conf_msp_ts column that may hold another temperature.
    """
    if name in p.conf and (name != "msp_ts" or stored_msp_ts):
        return p.conf[name]
    try:
        return compute_score(name, p.logits, temperature)
    except (KeyError, ValueError):
        return None


def log_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise log-softmax of `logits / temperature`."""
    return log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)




def with_logits(
    p: Predictions, logits: np.ndarray, names: Sequence[str] | None = None
) -> Predictions:
    """`p` with new `logits` (offsets added or taken off, members averaged): probabilities and
    every logit score among `names` (default: `p`'s scores) recomputed on them, the others
    (feature scores) kept, KeyError for one `p` lacks; `msp_ts` (another temperature's) and
    the abstentions dropped."""
    out = p.subset(np.arange(p.n))
    out.logits, out.probs, out.abstain = logits, softmax(logits), None
    conf = {}
    for name in p.conf if names is None else names:
        if name in SCORES:
            conf[name] = SCORES[name](logits)
        elif name in AVERAGE_SCORES:
            conf[name] = SCORES["msp"](logits)
        elif name != "msp_ts":
            conf[name] = p.conf[name]
    out.conf = conf
    return out
