"""The score registry: one list of names, from which the scores, checks and help texts derive."""

from __future__ import annotations

import numpy as np
import pytest
from tests.test_scores import _predictions

from skinclf.cli.evaluate import _OOD_GATE
from skinclf.cli.predict import _SCORES
from skinclf.contracts import score_registry as R
from skinclf.contracts.scores import SCORES
from skinclf.errors import ConfigError
from skinclf.policy.choice import gate_candidates
from skinclf.predict import _check_request
from skinclf.scoring.feature_scores import fit_feature_stats


def test_every_name_is_registered_once_and_the_lists_derive_from_it() -> None:
    names = list(R.SCORE_REGISTRY)
    assert len(names) == len(set(names))
    assert tuple(SCORES) == R.score_names("logits")
    assert R.CONFIDENCE_SCORES == ("msp", "msp_ts", "max_logit", "margin", "neg_entropy",
                                  "doctor", "energy")  # fmt: skip
    assert R.DEFAULT_SCORES == ("msp", "max_logit", "margin", "neg_entropy", "doctor")
    assert set(R.STAGE_SCORES) < set(R.FEATURE_SCORES) < set(R.GATE_SCORES)
    assert R.STAGE_SCORES[0] == "mahalanobis_stages"
    assert set(R.GATE_SCORES) - set(R.FEATURE_SCORES) == {"energy"}
    with pytest.raises(ValueError, match="registered twice"):
        R.register_score("msp", "logits")
    with pytest.raises(ValueError, match="differ from the registry"):
        R.logit_functions({name: None for name in reversed(R.SCORES_FROM_LOGITS)})


def test_each_logit_score_is_higher_for_a_more_confident_row() -> None:
    logits = np.array([[4.0, 0.0, 0.0], [0.5, 0.4, 0.3]])
    for name, fn in SCORES.items():
        values = fn(logits)
        assert values.shape == (2,) and values[0] > values[1], name


def test_feature_statistics_compute_every_feature_and_stage_score() -> None:
    rng = np.random.default_rng(0)
    x, stages = rng.normal(size=(60, 4)), rng.normal(size=(60, 7))
    w, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    stats = fit_feature_stats(x, rng.integers(0, 3, 60), w, b, stages=stages, stage_dims=(1,) * 7)
    out = stats.scores(np.c_[x, stages][:5], R.FEATURE_SCORES)
    assert tuple(out) == R.FEATURE_SCORES
    assert all(v.shape == (5,) and np.isfinite(v).all() for v in out.values())


def test_predict_accepts_every_registered_score_and_refuses_another_by_name(tmp_path) -> None:
    runs, data = [tmp_path / "run"], tmp_path / "images"
    _check_request(data, None, runs, "predictions", list(R.SCORE_REGISTRY))
    with pytest.raises(ConfigError, match="Unknown score 'softmax'; choose from .*mc_dropout_neg"):
        _check_request(data, None, runs, "predictions", ["msp", "softmax"])


def test_help_texts_and_gate_candidates_come_from_the_registry() -> None:
    assert all(name in _SCORES.help for name in R.SCORE_REGISTRY)
    assert _SCORES.default == ",".join(R.DEFAULT_SCORES)
    assert all(name in _OOD_GATE.help for name in R.GATE_SCORES)
    p = _predictions(np.zeros((4, 3)), {name: np.zeros(4) for name in ("knn", "vim", "doctor")})
    candidates = gate_candidates(p, "msp")
    assert candidates == ["knn", "vim", "energy", "knn+msp", "vim+msp"]
    assert all(part in R.GATE_SCORES for c in candidates for part in c.split("+")[:1])
