"""From a model's outputs to its decisions: members combined, logit offsets, confidence scores,
and the stored selective classifier's abstentions with their reasons. `Predictor` calls these,
so `skinclf predict`, `skinclf.load`, the server and the pipeline decide the same way."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skinclf.contracts.predictions import softmax
from skinclf.contracts.score_registry import FEATURE_SCORES, STAGE_SCORES
from skinclf.contracts.scores import SCORES, msp_ts
from skinclf.contracts.selective import apply_policy
from skinclf.errors import ConfigError, DataError
from skinclf.scoring.feature_scores import FeatureStats
from skinclf.scoring.offsets import apply_offsets


def with_offsets(
    logits: np.ndarray, probs: np.ndarray, offsets: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(logits + offsets, their softmax): the decision the offsets move, before any score;
    unchanged without offsets."""
    if offsets is None:
        return logits, probs
    shifted = apply_offsets(logits, offsets)
    return shifted, softmax(shifted)


def combine_members(results: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, probabilities, score features of the first member: its pooled features, then
    its stages' pooled outputs when taken) of the members' `Inference`s; an ensemble averages
    probabilities and its logits are the log of the mean probabilities."""
    probs = np.mean([softmax(r.logits) for r in results], axis=0)
    first = results[0]
    logits = np.log(np.clip(probs, 1e-12, None)) if len(results) > 1 else first.logits
    return logits, probs, first.score_features


def logit_scores(
    requested: Sequence[str], logits: np.ndarray, tta: str, n_members: int
) -> dict[str, np.ndarray]:
    """The requested logit scores, plus `tta` under D4 TTA and `ensemble` for an ensemble
    (both the MSP of the averaged probabilities)."""
    conf = {name: SCORES[name](logits) for name in requested if name in SCORES}
    if "tta" in requested or tta == "d4":
        conf["tta"] = SCORES["msp"](logits)
    if n_members > 1:
        conf["ensemble"] = SCORES["msp"](logits)
    return conf


def gate_feature_scores(sel) -> tuple[str, ...]:
    """The feature scores among the OOD gate's components (none without a gate)."""
    gate = sel.gate
    return tuple(c for c in gate.components if c in FEATURE_SCORES) if gate else ()


def gate_needs_stages(sel) -> bool:
    """Whether the OOD gate uses a stage score (inference must take the stages' outputs)."""
    return any(c in STAGE_SCORES for c in gate_feature_scores(sel))


def gate_stats_path(sel, selective: Path) -> Path:
    """Where the feature statistics of `selective`'s OOD gate are; DataError when it names none
    or the file is missing."""
    gate = sel.gate
    names = gate_feature_scores(sel)
    if not gate.stats_file:
        raise DataError(f"{selective}: its OOD gate uses {names[0]} but names no stats file.")
    stats_path = Path(selective).parent / gate.stats_file
    if not stats_path.resolve().is_relative_to(Path(selective).parent.resolve()):
        raise DataError(
            f"{selective}: its OOD gate's stats file {gate.stats_file!r} is outside its folder."
        )
    if not stats_path.is_file():
        raise DataError(
            f"{stats_path} is missing: selective.json's OOD gate needs the feature statistics "
            "that `skinclf evaluate --gate-stats` writes beside it."
        )
    return stats_path


def gate_stats(sel, selective: Path) -> FeatureStats:
    """The feature statistics the OOD gate of `selective` names, checked: they must score the
    gate's components; DataError when missing or damaged."""
    stats_path = gate_stats_path(sel, selective)
    stats = _load_stats(str(stats_path), stats_path.stat().st_mtime_ns)
    needs_stages = gate_needs_stages(sel)
    if needs_stages and stats.stages is None:
        raise DataError(
            f"{stats_path}: has no stage statistics, but the OOD gate of {selective} uses "
            f"{', '.join(gate_feature_scores(sel))}; export or evaluate the model again."
        )
    return stats


@functools.lru_cache(maxsize=4)
def _load_stats(path: str, mtime_ns: int) -> FeatureStats:
    """The feature statistics at `path`, read once per version of the file (a server predicts
    many requests with the same, often large, statistics)."""
    return FeatureStats.load(path)


def gate_values(sel, selective: Path, feats: np.ndarray, stats=None) -> dict[str, np.ndarray]:
    """The OOD gate's feature-score components, from `stats` (a loaded `FeatureStats`) or the
    statistics beside selective.json."""
    names = gate_feature_scores(sel)
    if not names:
        return {}
    if stats is None:
        stats = gate_stats(sel, selective)
    return stats.scores(feats, names)


def abstain_decisions(
    sel,
    selective: Path,
    requested: Sequence[str],
    logits: np.ndarray,
    feats: np.ndarray,
    conf: dict[str, np.ndarray],
    stats=None,
) -> tuple[np.ndarray, np.ndarray]:
    """(abstain, abstain_reason) of the stored selective classifier; adds its scores to conf.
    `stats`: the gate's feature statistics, when already loaded."""
    if "msp_ts" in requested:
        if sel.temperature is None:
            raise ConfigError(
                f"msp_ts needs a temperature, but {selective} has none: it was fitted "
                "without --val; run `skinclf evaluate` with --val."
            )
        conf["msp_ts"] = msp_ts(logits, sel.temperature)
    values = gate_values(sel, selective, feats, stats)
    score_values, abstain, reason = apply_policy(sel, logits, values)
    conf.setdefault(sel.score, score_values)
    for name, component in values.items():
        conf.setdefault(name, component)
    return abstain, reason


def selective_thresholds(sel) -> dict:
    """The thresholds of a selective classifier (OOD gate, confidence gate), or {}."""
    if sel is None:
        return {}
    out: dict = {
        "confidence": {
            "gate": sel.confidence_gate,
            "score": sel.score,
            "temperature": sel.temperature,
            "threshold": sel.threshold,
            "target_risk": sel.target_risk,
            "target_coverage": sel.target_coverage,
            "fitted_on": sel.fitted_on,
        }
    }
    gate = sel.gate
    if gate is not None:
        keys = ("score", "threshold", "id_keep", "id_kept", "fitted_on", "n", "chosen_by")
        out["ood"] = {k: getattr(gate, k) for k in keys}
    return out


NO_POLICY_MESSAGE = "this model has no selective classifier: it never abstains"
GATES_OFF_MESSAGE = "this model's policy never abstains (no OOD gate, confidence gate off)"
ABSTAINS_ALWAYS_MESSAGE = (
    "this model's policy abstains on every image (no threshold met its target risk)"
)


def policy_note(sel) -> str:
    """One sentence when a policy (a `Selective`, or None) cannot help a user: there is none,
    it never abstains, or it abstains on every image; "" otherwise."""
    if sel is None:
        return NO_POLICY_MESSAGE
    if never_abstains(sel):
        return GATES_OFF_MESSAGE
    return ABSTAINS_ALWAYS_MESSAGE if abstains_on_everything(sel) else ""


def never_abstains(sel) -> bool:
    """Whether a selective classifier accepts every image: no OOD gate, confidence gate off."""
    return sel is not None and sel.confidence_gate == "off" and sel.gate is None


def abstains_on_everything(sel) -> bool:
    """Whether a selective classifier abstains on every image whatever it sees: its confidence
    gate is on and found no threshold (SGR had no solution)."""
    return sel is not None and sel.confidence_gate != "off" and sel.threshold is None
