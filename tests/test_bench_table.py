"""benchmarks/table.py: the results table of benchmarks/README.md from small JSON fixtures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

TABLE_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "table.py"


@pytest.fixture(scope="module")
def table():
    spec = importlib.util.spec_from_file_location("bench_table", TABLE_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, name: str, data: object) -> None:
    (folder / name).write_text(json.dumps(data))


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    _write(
        folder,
        "speed.json",
        {
            "date": "2026-12-02T06:00:00+00:00",
            "machine": {"cpu": "Test CPU", "logical_cpus": 2},
            "settings": {"backbone": "efficientnet_lite0", "size": 64},
            "matmul_peak_gflops_per_s": {"fp32": 100.0, "bf16": 5.0},
            "train": [
                {
                    "config": "fp32, channels_last",
                    "images_per_s": 40.0,
                    "ratio_vs_fp32_channels_last": 1.0,
                    "fraction_of_matmul_peak": 0.1,
                },
                {"config": "fp32", "images_per_s": 30.0, "ratio_vs_fp32_channels_last": 0.75},
                {
                    "config": "bf16, channels_last",
                    "images_per_s": 8.0,
                    "ratio_vs_fp32_channels_last": 0.2,
                },
            ],
            "predict": [{"config": "fp32, channels_last", "images_per_s": 220.0}],
        },
    )
    # an older file with keys missing: its numbers become "–"
    _write(
        folder,
        "frozen_cache.json",
        {"date": "2026-11-26T05:33:59+00:00", "train_images_per_second": {"full": 17.4}},
    )
    cache = {"machine": "2-core box", "ratio": {"best_cache_vs_best_jpeg": 8.6}}
    _write(folder, "cache.json", cache)
    comparison = {
        "a": {
            "preset": "default",
            "backbone": "efficientnet_lite2",
            "test_balanced_accuracy": 0.75,
            "test_balanced_accuracy_ci95": [0.7, 0.8],
            "test_macro_f1": 0.61,
            "seconds_to_val_balanced_accuracy_0.70": 612.4,
        },
        "b": {"file": "/x/ensAB/test_predictions.csv", "balanced_accuracy": 0.5, "macro_f1": 0.42},
        "paired_bootstrap_balanced_accuracy": {
            "difference": 0.25,
            "difference_ci95": [0.2, 0.3],
            "p_a_greater": 1.0,
        },
    }
    _write(folder, "my_runs_compared.json", comparison)
    _write(
        folder,
        "tune_head_workers.json",
        {
            "speedup": 1.9,
            "runs": [
                {"workers": 1, "trials_per_min": 10.0},
                {
                    "workers": 2,
                    "trials_per_min": 19.0,
                    "finished": 200,
                    "pruned": 90,
                    "trial_phase_s": 631.6,
                },
            ],
        },
    )
    _write(folder, "unrelated.json", {"something": 1})  # neither known nor a comparison
    (folder / "shift_default_gates.json").write_text("{not json")
    return folder


def _by_name(rows: list[list[str]]) -> dict[str, list[str]]:
    return {r[0]: r for r in rows}


def test_rows_from_fixtures(table, results: Path) -> None:
    rows = _by_name(table.rows(results, results.parent))
    assert set(rows) == {
        "speed: train/predict, matmul peak",
        "speed: frozen-stage cache",
        "speed: decode cache vs JPEG",
        "selective and shift",
        "speed: tuning trials/min",
        "quality: my_runs_compared",
    }
    speed = rows["speed: train/predict, matmul peak"]
    assert "train 40.0 img/s" in speed[1] and "10.0% of the fp32 matmul peak 100" in speed[1]
    assert "bf16 0.20x" in speed[1] and "contiguous 0.75x" in speed[1]
    assert "predict 220.0 img/s" in speed[1]
    assert speed[2:] == ["Test CPU, 2 CPUs", "2026-12-02", "[speed.json](results/speed.json)"]

    frozen = rows["speed: frozen-stage cache"]
    assert "full 17.4" in frozen[1] and "partial –" in frozen[1] and "cached –" in frozen[1]
    assert frozen[2] == "–" and frozen[3] == "2026-11-26"
    cache = rows["speed: decode cache vs JPEG"]
    assert "8.6x" in cache[1] and "build – img/s" in cache[1]
    assert cache[2] == "2-core box" and cache[3] == "–"
    assert rows["selective and shift"][1].startswith("unreadable")
    tune = rows["speed: tuning trials/min"][1]
    assert "1 worker(s) 10.0, 2 worker(s) 19.0 (1.90x)" in tune
    assert "200 trials (90 pruned) in 10.5 min with 2 workers" in tune

    compared = rows["quality: my_runs_compared"][1]
    assert "A default lite2 0.750 [0.700, 0.800]" in compared
    assert "B ensAB 0.500 –" in compared
    assert "+0.250 [0.200, 0.300]" in compared and "P(A > B) 1.00" in compared
    # the other numbers of compare_presets.py / compare_predictions.py, where a file has them
    assert "macro-F1 A 0.610 vs B 0.420" in compared
    assert "s to val BA 0.70 A 612 vs B –" in compared and "AURC" not in compared


def test_known_files_come_first_in_order(table, results: Path) -> None:
    names = [r[0] for r in table.rows(results, results.parent)]
    assert (
        names.index("speed: train/predict, matmul peak")
        < names.index("speed: frozen-stage cache")
        < names.index("quality: my_runs_compared")
    )
    assert names[-1] == "quality: my_runs_compared"


def test_update_readme_keeps_text_outside_markers(table, results: Path, tmp_path: Path) -> None:
    before = "# Benchmarks\n\nIntro | with a pipe.\n\n"
    after = "\n\n## More\n\nold text stays\n"
    readme = tmp_path / "README.md"
    readme.write_text(before + table.START + "\n| stale | table |\n" + table.END + after)

    assert table.update_readme(readme, results) is True
    text = readme.read_text()
    assert text.startswith(before + table.START + "\n")
    assert text.endswith(table.END + after)
    inside = text[text.index(table.START) + len(table.START) : text.index(table.END)]
    lines = inside.strip().splitlines()
    assert lines[0] == "| benchmark | headline | machine | date | JSON |"
    assert len(lines) == 2 + 6  # header, rule, one line per row
    assert "stale" not in inside
    assert all(line.count(" | ") == 4 for line in lines[2:])  # no stray pipes in a cell
    assert table.update_readme(readme, results) is False  # a second run changes nothing


def test_update_readme_without_markers_says_so(table, results: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    with pytest.raises(SystemExit, match="markers"):
        table.update_readme(readme, results)
    assert readme.read_text() == "# no markers here\n"


def test_a_skinclf_run_predictions_file_is_named_by_its_run(table) -> None:
    side = {"file": "runs/paper/eval/isic2018-test-dev.csv", "balanced_accuracy": 0.54}
    row = table._comparison({"a": side, "b": side, "paired_bootstrap_balanced_accuracy": {}})
    assert row.startswith("balanced accuracy A paper 0.540 – vs B paper 0.540")


def test_a_cv_row_names_the_fold_models_only_when_measured(table) -> None:
    pooled = {"n": 5984, "balanced_accuracy": 0.7, "balanced_accuracy_ci95": [0.68, 0.72]}
    ensemble = {"offsets": {"balanced_accuracy": 0.73}, "no_offsets": dict(pooled, n=504)}
    cv = {
        "folds": 3,
        "out_of_fold": {"pooled": pooled, "pooled_offsets": {"balanced_accuracy": 0.69}},
        "external": {"isic": {"ensemble": ensemble}},
        "train_seconds": {"fold_0": 1800.0, "fold_1": 2400.0},
    }
    text = table._cv(cv)
    assert "3-fold out-of-fold balanced accuracy 0.700 [0.680, 0.720] over 5,984" in text
    assert "isic: ensemble 0.700 [0.680, 0.720], with offsets 0.730;" in text
    assert "one fold model" not in text and "35 min training per fold" in text
    cv["external"]["isic"]["single_model_balanced_accuracy_mean"] = 0.66
    assert "with offsets 0.730, one fold model 0.660 (mean)" in table._cv(cv)
    cv["out_of_fold"] = {"finished": ["fold_0"], "folds": {"fold_0": pooled}}
    del cv["external"]["isic"]["ensemble"]
    text = table._cv(cv)
    assert text.startswith("1 of 3 folds finished, held-out balanced accuracy fold_0 0.700 [")
    assert "isic: one fold model 0.660 (mean)" in text and "ensemble" not in text


def test_a_cv_comparison_is_listed_with_each_of_its_parts(table, results: Path) -> None:
    pair = json.loads((results / "my_runs_compared.json").read_text())
    pair["date"], pair["machine"] = "2026-12-05T04:00:00", {"cpu": "Test CPU", "logical_cpus": 2}
    _write(results, "cv3_new_vs_default.json", {"out_of_fold": pair, "isic": pair})
    _write(results, "cv3_part_vs_default.json", {"out_of_fold": pair, "isic_by_fold": {
        "fold_0": pair, "fold_1": dict(pair, paired_bootstrap_balanced_accuracy={
            "difference": -0.04})}})  # fmt: skip
    rows = _by_name(table.rows(results, results.parent))
    whole = rows["quality: cv3_new_vs_default"]
    assert whole[1].startswith("out-of-fold: balanced accuracy A ") and "; isic: " in whole[1]
    assert whole[2:4] == ["Test CPU, 2 CPUs", "2026-12-05"]
    part = rows["quality: cv3_part_vs_default"][1]
    assert part.endswith("; isic, fold model A - B: fold_0 +0.250, fold_1 -0.040")


def test_the_detection_of_cv_ensembles_names_each_folder(table, results: Path) -> None:
    scores = {"msp": {"auroc": 0.61}, "knn": {"auroc": 0.952}}
    folders = {"runs/cv3-a": {"scores": scores}, "runs/cv3-b": {"scores": {"msp": {"auroc": 0.7}}}}
    detection = {"date": "2026-12-05T07:00:00", "id": "isic", "ood": "pad", "folders": folders}
    _write(results, "cv3_detection.json", detection)
    row = _by_name(table.rows(results, results.parent))["shift: OOD detection of the cv ensembles"]
    assert row[1] == "isic vs pad AUROC: cv3-a: msp 0.610, knn 0.952; cv3-b: msp 0.700"
    assert row[3] == "2026-12-05"
