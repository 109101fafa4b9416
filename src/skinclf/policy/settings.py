"""`PolicySettings`: what a policy fit is asked for (the confidence gate's target, the selective
score and the OOD gate), shared by `SelectivePolicy` and the gated fit of `skinclf.policy.gates`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import ConfigDict, with_config

from skinclf.contracts.score_registry import CONFIDENCE_SCORES
from skinclf.contracts.selective import CONFIDENCE_GATES
from skinclf.errors import ConfigError
from skinclf.policy.sgr import AUTO


@with_config(ConfigDict(extra="forbid"))  # read back from a policy file's `fit` record
@dataclass(frozen=True)
class PolicySettings:
    """What to fit: the confidence gate's target, the selective score and the OOD gate."""

    target_risk: float | str = AUTO  # a risk in (0, 1], or auto
    delta: float = 0.05
    selective_score: str = "auto"  # auto: the logit score of lowest validation AURC
    ood_gate: str | None = None  # a score or a combination a+b; None: no OOD gate
    choose_gate: bool = False  # choose the OOD gate without OOD labels
    id_keep: float = 0.95
    confidence_gate: str = "sgr"  # sgr | coverage | off (the gated classifier's)
    target_coverage: float | None = None

    def check(self) -> None:
        """ConfigError in one sentence for a setting no fit can use."""
        if self.target_risk != AUTO:
            risk = float(self.target_risk)
            if not (0.0 < risk <= 1.0) or math.isnan(risk):
                raise ConfigError(f"target risk {risk:g} is outside (0, 1]; use e.g. 0.10.")
        if not (0.0 < self.delta < 1.0) or math.isnan(self.delta):
            raise ConfigError(f"delta {self.delta:g} is outside (0, 1); use e.g. 0.05.")
        if self.selective_score != "auto" and self.selective_score not in CONFIDENCE_SCORES:
            raise ConfigError(
                f"selective score {self.selective_score!r} cannot be computed from logits by "
                f"predict; use one of {', '.join(CONFIDENCE_SCORES)} or auto."
            )
        if self.choose_gate and self.ood_gate:
            raise ConfigError("Give --ood-gate SCORE or --choose-gate, not both.")
        if self.gated and not (0.0 < self.id_keep <= 1.0):
            raise ConfigError(
                f"--id-keep {self.id_keep!r} is not a number in (0, 1]; give e.g. 0.95."
            )
        if self.confidence_gate not in CONFIDENCE_GATES:
            raise ConfigError(
                f"--confidence-gate {self.confidence_gate!r}: use sgr, coverage or off."
            )

    @property
    def gated(self) -> bool:
        return bool(self.ood_gate or self.choose_gate)
