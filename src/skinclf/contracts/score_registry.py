"""The one list of confidence-score names (FD-Shifts' confidence-function registry is the model).

Each score is registered once: its name (the `conf_<name>` column of a predictions file), what
it needs (one model's logits, the policy's temperature, TTA views, several models, dropout
passes, the pooled features or the backbone stages' outputs), whether it can be (part of) an
OOD gate, and whether `predict` computes it when no `--scores` are given. Every list of names,
every `--scores` check and every help text derives from it (`score_names`, `describe_scores`).
The functions live elsewhere: the logit scores in `skinclf.contracts.scores` (its table is
checked against this registry at import, `logit_functions`), the feature-space scores in
`skinclf.scoring.feature_scores.FeatureStats`. No numpy here: the CLI's help reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

ScoreInput = Literal["logits", "temperature", "views", "members", "passes", "features", "stages"]
INPUT_DESCRIPTIONS: dict[str, str] = {
    "logits": "from one model's logits",
    "temperature": "with the temperature the policy fitted",
    "views": "over the test-time augmentation views",
    "members": "over the models of an ensemble",
    "passes": "over stochastic passes of the head with dropout on",
    "features": "from the pooled features, against the training split's statistics",
    "stages": "from the backbone stages' pooled outputs, against the training split's statistics",
}
"""What each kind of input means, in help texts (`describe_scores`)."""
KNN_KS: tuple[int, ...] = (1, 5, 20, 50, 100, 200)
"""Other neighbour ranks than the fitted one (10), as scores `knn_k<k>`, so that k can be
chosen on validation data (`skinclf evaluate --choose-gate`) like any other gate score."""
MAX_STAGES = 7  # stage scores mahalanobis_block0..6 (EfficientNet and MobileNet have 7)


@dataclass(frozen=True)
class ScoreInfo:
    """One registered score: its name (the `conf_<name>` column), what it needs, whether it can
    gate, and whether predict computes it when no `--scores` are given."""

    name: str
    needs: ScoreInput
    gate: bool = False
    default: bool = False


SCORE_REGISTRY: dict[str, ScoreInfo] = {}
"""Every confidence score by name, in registration order (the order of columns and tables)."""


def register_score(
    name: str, needs: ScoreInput, *, gate: bool = False, default: bool = False
) -> ScoreInfo:
    """Add a score to `SCORE_REGISTRY` (ValueError for a name registered twice)."""
    if name in SCORE_REGISTRY:
        raise ValueError(f"score {name!r} is registered twice")
    info = ScoreInfo(name, needs, gate, default)
    SCORE_REGISTRY[name] = info
    return info


def score_names(
    *needs: ScoreInput, gate: bool | None = None, default: bool | None = None
) -> tuple[str, ...]:
    """Registered names (all, or those needing one of `needs`), in registration order, kept to
    the gate-capable or predict-default ones when `gate` or `default` is given."""
    return tuple(
        info.name
        for info in SCORE_REGISTRY.values()
        if (not needs or info.needs in needs)
        and (gate is None or info.gate == gate)
        and (default is None or info.default == default)
    )


def describe_scores() -> str:
    """Help text listing every score, grouped by what they need."""
    groups: dict[str, list[str]] = {}
    for info in SCORE_REGISTRY.values():
        groups.setdefault(info.needs, []).append(info.name)
    return "; ".join(f"{INPUT_DESCRIPTIONS[k]}: {', '.join(v)}" for k, v in groups.items())


register_score("msp", "logits", default=True)
register_score("msp_ts", "temperature")
register_score("max_logit", "logits", default=True)
register_score("margin", "logits", default=True)
register_score("neg_entropy", "logits", default=True)
register_score("doctor", "logits", default=True)
register_score("energy", "logits", gate=True)
register_score("tta", "views")
register_score("ensemble", "members")
register_score("mc_dropout", "passes")
register_score("mc_dropout_neg_mi", "passes")
for _name in ("mahalanobis", "rel_mahalanobis", "knn", "vim", *(f"knn_k{k}" for k in KNN_KS)):
    register_score(_name, "features", gate=True)
for _name in ("mahalanobis_stages", *(f"mahalanobis_block{i}" for i in range(MAX_STAGES))):
    register_score(_name, "stages", gate=True)


SCORES_FROM_LOGITS = score_names("logits")
"""Scores computable from one model's logits alone (`skinclf.contracts.scores.SCORES`)."""
CONFIDENCE_SCORES = score_names("logits", "temperature")
"""The candidates for the policy's single confidence score (`msp_ts` only with a temperature)."""
DEFAULT_SCORES = score_names(default=True)
"""What predict computes when no `--scores` are given."""
FEATURE_SCORES = score_names("features", "stages")
"""Scores that read the training split's feature statistics (RUN/feature_stats.npz)."""
STAGE_SCORES = score_names("stages")
"""Scores that read the backbone stages' outputs; the first is mahalanobis_stages."""
AVERAGE_SCORES = score_names("views", "members")
"""Scores a predict of several views or models writes: the MSP of the averaged probabilities."""
GATE_SCORES = score_names(gate=True)
"""Scores that can be (part of) an OOD gate."""

_F = TypeVar("_F")


def logit_functions(table: Mapping[str, _F]) -> dict[str, _F]:
    """`table` as a dict, ValueError unless it names exactly the registry's logit scores, in
    its order (so a score cannot be added to one place and not the other)."""
    if tuple(table) != SCORES_FROM_LOGITS:
        raise ValueError(
            f"logit score functions {tuple(table)} differ from the registry's {SCORES_FROM_LOGITS}"
        )
    return dict(table)
