"""`skinclf tune --show`: a study's leaderboard (rich table) and Optuna's plots as PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from skinclf.cli import app
from skinclf.errors import ConfigError
from skinclf.tune.show import show

PNG = b"\x89PNG\r\n\x1a\n"


def _study(folder: Path, complete: int, name: str = "skinclf-finetune") -> None:
    """A study as `skinclf tune --stage finetune` leaves it: complete trials with per-epoch
    scores, one pruned, one failed, one running."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState, create_trial

    folder.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=name, storage=f"sqlite:///{folder / 'study.db'}", direction="maximize"
    )
    dists = {
        "train.lr": FloatDistribution(3e-4, 3e-3, log=True),
        "augment.cutmix": CategoricalDistribution([0.0, 1.0]),
    }

    def add(i: int, state: TrialState, value: float | None) -> None:
        params = {"train.lr": 3e-4 * (1 + i % 9), "augment.cutmix": float(i % 2)}
        steps = {0: 0.3 + 0.01 * i, 1: 0.4 + 0.02 * i} if state != TrialState.RUNNING else {}
        study.add_trial(
            create_trial(
                state=state, value=value, params=params, distributions=dists,
                intermediate_values=steps, user_attrs={"baseline": True} if i == 0 else {},
            )
        )  # fmt: skip

    for i in range(complete):
        add(i, TrialState.COMPLETE, 0.5 + 0.05 * i)
    add(complete, TrialState.PRUNED, None)
    add(complete + 1, TrialState.FAIL, None)
    add(complete + 2, TrialState.RUNNING, None)


def test_show_ranks_the_trials_counts_states_and_writes_the_plots(tmp_path: Path) -> None:
    _study(tmp_path / "ft", complete=3)
    board = show(str(tmp_path / "ft"))
    assert board.study == "skinclf-finetune"
    assert board.counts == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 1, "RUNNING": 1, "WAITING": 0}
    assert [row["number"] for row in board.best] == [2, 1, 0]  # best first
    assert board.best[0]["value"] == pytest.approx(0.6)
    assert board.best[0]["params"] == {"train.lr": pytest.approx(9e-4), "augment.cutmix": 0.0}
    names = sorted(p.name for p in board.plots)
    assert names == [
        "history.png",
        "importances.png",
        "intermediate_values.png",
        "parallel_coordinate.png",
    ]
    for path in board.plots:
        assert path.parent == tmp_path / "ft" and path.read_bytes()[:8] == PNG
    # 3 complete trials: the importances are drawn, with a word on how little they rest on
    assert board.notes == ["importances: from only 3 complete trials, a rough guide, not a ranking"]


def test_importances_need_two_complete_trials_and_plots_go_to_plots_dir(tmp_path: Path) -> None:
    _study(tmp_path / "ft", complete=1)
    board = show(f"sqlite:///{tmp_path / 'ft' / 'study.db'}", plots=tmp_path / "plots")
    assert [n for n in board.notes if n.startswith("importances: skipped")]
    assert "importances.png" not in {p.name for p in board.plots}
    assert {p.parent for p in board.plots} == {tmp_path / "plots"}
    assert (tmp_path / "plots" / "history.png").read_bytes()[:8] == PNG


def test_the_cli_prints_the_leaderboard(tmp_path: Path) -> None:
    _study(tmp_path / "ft", complete=2)
    result = CliRunner().invoke(
        app, ["tune", "--show", str(tmp_path / "ft")], env={"COLUMNS": "160"}
    )
    assert result.exit_code == 0, result.output
    assert "study skinclf-finetune: 2 complete, 1 pruned, 1 failed, 1 running" in result.output
    assert "0.5500" in result.output and "train.lr=0.0006" in result.output
    assert "0 (baseline)" in result.output and "1 (baseline)" not in result.output
    assert "wrote" in result.output and "importances.png" in result.output


def test_several_studies_need_a_name_and_a_missing_folder_is_one_sentence(tmp_path: Path) -> None:
    _study(tmp_path / "ft", complete=1, name="a")
    _study(tmp_path / "ft", complete=1, name="b")
    with pytest.raises(ConfigError, match=r"holds 2 studies \(a, b\): name one with --study"):
        show(str(tmp_path / "ft"))
    assert show(str(tmp_path / "ft"), "b").study == "b"
    with pytest.raises(ConfigError, match="has no study 'c'; it has: a, b"):
        show(str(tmp_path / "ft"), "c")
    with pytest.raises(ConfigError, match="holds no study.db"):
        show(str(tmp_path))


def test_the_plots_name_their_axes_in_the_studys_words() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skinclf.tune.show import _label

    fig, ax = plt.subplots()
    _label(ax, "intermediate_values")
    assert ax.get_xlabel().startswith("epoch") and "balanced accuracy" in ax.get_ylabel()
    _label(ax, "importances")  # Optuna's own names stay where they fit
    assert ax.get_xlabel().startswith("epoch")
    plt.close(fig)


def test_importances_from_ten_complete_trials_carry_no_warning(tmp_path: Path) -> None:
    _study(tmp_path / "ft", complete=10)
    board = show(str(tmp_path / "ft"))
    assert "importances.png" in {p.name for p in board.plots}
    assert not [n for n in board.notes if n.startswith("importances")]
