"""The chosen policy per subgroup: coverage, accepted accuracy and silent failures for each
value of each metadata column of a predictions file (`meta_<name>`: HAM10000 age, sex,
localization; PAD-UFES-20 fitspatrick, age, gender, region).

Ages are grouped in bands; an empty value is "unknown". Every value is listed with its image
count, however few images it has: read the numbers of a small subgroup with its n.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from skinclf.contracts.predictions import Predictions
from skinclf.contracts.selective import UNCERTAIN, UNFAMILIAR
from skinclf.evaluate.gates import policy_outcome

UNKNOWN = "unknown"
# (upper bound, exclusive; band name)
AGE_BANDS: tuple[tuple[float, str], ...] = (
    (30, "<30"),
    (45, "30-44"),
    (60, "45-59"),
    (75, "60-74"),
    (math.inf, "75+"),
)
_BAND_ORDER = [name for _, name in AGE_BANDS]


def age_bands(values: np.ndarray) -> np.ndarray:
    """Each age (text, as written) as its band; "unknown" when empty or not a number."""
    out = np.full(len(values), UNKNOWN, dtype=object)
    for i, v in enumerate(values):
        try:
            age = float(str(v).strip())
        except ValueError:
            continue
        if math.isfinite(age) and age >= 0:
            out[i] = next(name for upper, name in AGE_BANDS if age < upper)
    return out


def subgroup_values(name: str, values: np.ndarray) -> np.ndarray:
    """The subgroup of each row for metadata column `name`: age bands for `age`, else the value
    itself ("unknown" where empty)."""
    if name == "age":
        return age_bands(values)
    text = np.array([str(v).strip() for v in values], dtype=object)
    text[text == ""] = UNKNOWN
    return text


def _order(groups: np.ndarray) -> list[str]:
    """Age bands in age order, other values sorted; "unknown" last."""
    present = set(groups.tolist())
    rank = {band: i for i, band in enumerate(_BAND_ORDER)}
    ordered = sorted(present - {UNKNOWN}, key=lambda v: (rank.get(v, len(rank)), v))
    return ordered + ([UNKNOWN] if UNKNOWN in present else [])


def subgroup_outcomes(p: Predictions, abstain: np.ndarray, reason: np.ndarray) -> dict:
    """{meta name: {value: n, coverage, accepted_accuracy, silent_failure_rate, reasons}} of
    the policy's decisions (`abstain`, `reason`) on the rows of `p`."""
    abstain, reason = np.asarray(abstain, bool), np.asarray(reason, dtype=object)
    out: dict = {}
    for name, values in p.meta.items():
        groups = subgroup_values(name, values)
        table = {}
        for value in _order(groups):
            m = groups == value
            o = policy_outcome(
                abstain[m], reason[m], p.y[m], p.pred[m], p.labelled[m], p.semantic_ood[m]
            )
            table[value] = {
                "n": o.n,
                "coverage": o.coverage,
                "accepted_accuracy": o.accepted_accuracy,
                "silent_failure_rate": o.silent_failure_rate,
                "reasons": o.reasons,
            }
        out[name] = table
    return out


def add_subgroups(
    sets: dict, named_sets: Mapping[str, Predictions], decisions: Mapping[str, tuple]
) -> None:
    """Add `subgroups` to each entry of `sets` (metrics.json policy.sets) whose predictions
    carry metadata columns; `decisions[name]` is (image ids, abstain, reason)."""
    for name, p in named_sets.items():
        if p.meta and name in sets and name in decisions:
            _, abstain, reason = decisions[name]
            sets[name]["subgroups"] = subgroup_outcomes(p, abstain, reason)


def subgroup_tables(policy: dict) -> list[dict]:
    """The report's tables: one per set and metadata column of metrics.json's policy block."""
    tables = []
    for set_name, entry in policy.get("sets", {}).items():
        for column, groups in entry.get("subgroups", {}).items():
            rows = [
                [
                    value,
                    g["n"],
                    g["coverage"],
                    g["accepted_accuracy"],
                    g["silent_failure_rate"],
                    f"{g['reasons']['accepted']} / {g['reasons'][UNFAMILIAR]} / "
                    f"{g['reasons'][UNCERTAIN]}",
                ]
                for value, g in groups.items()
            ]
            tables.append({"set": set_name, "column": column, "rows": rows})
    return tables
