"""benchmarks/tune_result.py: a study summarised as JSON (best vs baseline, what pruning saved)
and kept as a copy a later session continues; its row in the benchmarks table."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _study(folder: Path) -> None:
    """Three complete trials (10, 12 and 14 minutes; the first the baseline), two pruned
    (after 2 and 4 epochs, 3 and 5 minutes), one running, one failed (found 90 minutes on)."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import FrozenTrial, TrialState

    folder.mkdir(parents=True)
    study = optuna.create_study(
        study_name="skinclf-finetune", storage=f"sqlite:///{folder / 'study.db'}",
        direction="maximize",
    )  # fmt: skip
    study.set_user_attr("stage", "finetune")
    start = datetime(2026, 12, 4, 12, 0)
    dist = {"train.lr": FloatDistribution(3e-4, 3e-3, log=True)}
    rows = [  # state, value, epochs, minutes, baseline
        (TrialState.COMPLETE, 0.60, 3, 10, True),
        (TrialState.COMPLETE, 0.66, 3, 12, False),
        (TrialState.COMPLETE, 0.58, 3, 14, False),
        (TrialState.PRUNED, None, 2, 3, False),
        (TrialState.PRUNED, None, 4, 5, False),
        (TrialState.RUNNING, None, 0, None, False),
        (TrialState.FAIL, None, 1, 90, False),
    ]
    for i, (state, value, epochs, minutes, baseline) in enumerate(rows):
        study.add_trial(
            FrozenTrial(
                number=i, trial_id=i, state=state, value=value,
                params={"train.lr": 1e-3 + 1e-4 * i}, distributions=dist,
                intermediate_values={e: 0.5 + 0.01 * e for e in range(epochs)},
                user_attrs={"baseline": True} if baseline else {}, system_attrs={},
                datetime_start=start,
                datetime_complete=None if minutes is None else start + timedelta(minutes=minutes),
            )
        )  # fmt: skip
    (folder / "split.csv").write_text("image_id,split\na,train\nb,val\n")


def test_a_study_is_summarised_and_kept(tmp_path: Path) -> None:
    import optuna

    _study(tmp_path / "ft")
    out, kept = tmp_path / "r.json", tmp_path / "kept"
    cmd = [sys.executable, str(BENCH / "tune_result.py"), str(tmp_path / "ft"), "--out", str(out),
           "--keep", str(kept)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    d = json.loads(out.read_text())
    assert d["counts"] == {"COMPLETE": 3, "PRUNED": 2, "RUNNING": 1, "FAIL": 1}
    assert d["trials"][6]["minutes"] is None  # killed: when it was found failed is no length
    assert d["best"]["number"] == 1 and d["best"]["value"] == pytest.approx(0.66)
    assert d["baseline"]["number"] == 0 and d["best_minus_baseline"] == pytest.approx(0.06)
    assert d["mean_minutes_complete_trial"] == pytest.approx(12.0)
    assert d["pruned_epochs"] == [2, 4]
    assert d["minutes_saved_by_pruning_estimate"] == pytest.approx((12 - 3) + (12 - 5))
    assert d["minutes_spent"] == pytest.approx(10 + 12 + 14 + 3 + 5)
    assert d["trials"][4]["per_epoch_val_balanced_accuracy"] == pytest.approx(
        [0.5, 0.51, 0.52, 0.53]
    )
    # the kept copy is the same study, and its split comes along
    copy = optuna.load_study(
        study_name="skinclf-finetune", storage=f"sqlite:///{kept / 'study.db'}"
    )
    assert [t.state.name for t in copy.trials].count("COMPLETE") == 3
    assert (kept / "split.csv").read_text() == (tmp_path / "ft" / "split.csv").read_text()

    spec = importlib.util.spec_from_file_location("bench_table", BENCH / "table.py")
    assert spec is not None and spec.loader is not None
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    line = table._tune_study(d)
    assert line.startswith("7 trials (3 complete, 2 pruned, 1 running, 1 failed)")
    assert "best validation balanced accuracy 0.660 (trial 1) vs the untuned preset 0.600" in line
    assert "pruning saved about 16 of 60 min" in line


def test_paused_minutes_come_out_of_a_trials_length(tmp_path: Path) -> None:
    _study(tmp_path / "ft")
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(BENCH / "tune_result.py"), str(tmp_path / "ft"), "--out", str(out),
           "--paused", "1=3", "--paused", "4=1.5"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    d = json.loads(out.read_text())
    assert d["trials"][1]["minutes"] == pytest.approx(9) and d["trials"][1]["paused_minutes"] == 3
    assert d["mean_minutes_complete_trial"] == pytest.approx((10 + 9 + 14) / 3)
    assert d["trials"][4]["minutes"] == pytest.approx(3.5)
    bad = subprocess.run([*cmd[:-1], "4"], capture_output=True, text=True)
    assert bad.returncode != 0 and "TRIAL=MINUTES" in bad.stderr
