"""Grouped stratified splits and split-file validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skinclf.data.split import (
    group_leaks,
    merged_groups,
    read_split,
    share_deviation,
    split_class_counts,
    split_dataset,
    strata,
    write_split,
)
from skinclf.errors import ConfigError, DataError

HAM_COUNTS = {"nv": 4323, "bkl": 583, "mel": 491, "bcc": 264, "akiec": 183, "vasc": 80, "df": 60}


def ham_like_table(seed: int = 0) -> pd.DataFrame:
    """HAM10000's class counts (5,984 images) with lesions of 1 to 6 images."""
    rng = np.random.default_rng(seed)
    rows = []
    lesion = 0
    for label, n in HAM_COUNTS.items():
        done = 0
        while done < n:
            k = min(n - done, int(rng.choice([1, 1, 1, 2, 2, 3, 4, 6])))
            for _ in range(k):
                rows.append((f"ISIC_{len(rows):07d}", label, f"HAM_{lesion:07d}"))
            done += k
            lesion += 1
    table = pd.DataFrame(rows, columns=["image_id", "label", "group"])
    table["semantic_ood"] = False
    return table.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def small_table() -> pd.DataFrame:
    """PAD-UFES-20-like: 120 images of 60 patients with mixed classes, 6 OOD rows."""
    rng = np.random.default_rng(3)
    labels = ["bcc"] * 40 + ["nv"] * 30 + ["bkl"] * 20 + ["akiec"] * 14 + ["mel"] * 10 + [""] * 6
    rng.shuffle(labels)
    patients = rng.integers(0, 60, size=len(labels))
    table = pd.DataFrame(
        {
            "image_id": [f"img{i}.png" for i in range(len(labels))],
            "label": labels,
            "group": [f"PAT_{p}" for p in patients],
        }
    )
    table["semantic_ood"] = table["label"] == ""
    return table


@pytest.fixture(scope="module")
def ham() -> pd.DataFrame:
    return ham_like_table()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ham_sized_split_is_grouped_complete_and_within_two_points(ham, seed):
    split = split_dataset(ham, val=0.15, test=0.15, seed=seed)
    assert list(split.columns) == ["image_id", "split"]
    assert split["image_id"].tolist() == ham["image_id"].tolist()  # every image exactly once
    assert set(split["split"]) == {"train", "val", "test"}
    assert group_leaks(ham, split) == []
    assert ham["group"].nunique() < len(ham)  # the groups really have several images
    assert share_deviation(ham, split) < 2.0
    sizes = split["split"].value_counts(normalize=True)
    assert sizes["train"] == pytest.approx(0.70, abs=0.01)
    assert sizes["val"] == pytest.approx(0.15, abs=0.01)
    assert sizes["test"] == pytest.approx(0.15, abs=0.01)
    # Rare classes appear in every split.
    counts = split_class_counts(ham, split)
    assert (counts.loc["df", ["train", "val", "test"]] > 0).all()


def test_calib_split_gets_its_fraction(ham):
    split = split_dataset(ham, val=0.1, test=0.2, calib=0.1, seed=0)
    sizes = split["split"].value_counts(normalize=True)
    assert set(sizes.index) == {"train", "val", "test", "calib"}
    assert sizes["calib"] == pytest.approx(0.10, abs=0.01)
    assert sizes["test"] == pytest.approx(0.20, abs=0.01)
    assert share_deviation(ham, split) < 2.0
    assert group_leaks(ham, split) == []


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    table = small_table()
    a = split_dataset(table, seed=7)
    b = split_dataset(table, seed=7)
    c = split_dataset(table, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert (a["split"] != c["split"]).any()


def test_small_data_best_effort_keeps_groups_and_spreads_ood_rows():
    table = small_table()
    split = split_dataset(table, seed=0)
    assert group_leaks(table, split) == []
    assert split["image_id"].is_unique and len(split) == len(table)
    deviation = share_deviation(table, split)
    assert 0.0 <= deviation < 10.0
    counts = split_class_counts(table, split)
    assert "ood" in counts.index  # OOD rows are their own stratum ...
    assert counts.loc["ood", "all"] == 6
    assert counts.loc["ood", "train"] >= 2  # ... spread like the rest, not dumped in one split


def test_strata_of_ood_and_unlabelled_rows():
    table = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "label": ["mel", "", None, "nv"],
            "group": ["g1", "g2", "g3", "g4"],
            "semantic_ood": [False, True, False, False],
        }
    )
    assert strata(table).tolist() == ["mel", "ood", "unlabelled", "nv"]


def test_share_deviation_hand_computed():
    table = pd.DataFrame(
        {"image_id": list("abcd"), "label": ["nv", "nv", "mel", "mel"], "group": list("abcd")}
    )
    split = pd.DataFrame({"image_id": list("abcd"), "split": ["train", "train", "train", "test"]})
    # whole: 50 % / 50 %; train: nv 2/3 (+16.7 points); test: mel 1/1 (+50 points).
    assert share_deviation(table, split) == pytest.approx(50.0)
    counts = split_class_counts(table, split)
    assert counts.loc["nv", "train"] == 2 and counts.loc["mel", "test"] == 1
    assert counts.loc["mel", "all"] == 2


def test_merged_groups_are_transitive_and_ignore_unknown_values():
    table = pd.DataFrame(
        {
            "image_id": ["i1", "i2", "i3", "i4", "i5"],
            "label": ["nv"] * 5,
            "group": ["A", "B", "C", "D", None],
        }
    )
    pairs = pd.DataFrame({"x": ["A", "B", "Z"], "y": ["B", "C", "D"]})
    groups = merged_groups(table, pairs).tolist()
    assert groups[0] == groups[1] == groups[2]  # A-B, B-C joined
    assert groups[3] not in groups[:3]  # Z is unknown: D stays alone
    assert groups[4] == "image:i5"  # an empty group is the image's own


@pytest.mark.parametrize("seed", range(5))
def test_merge_pairs_keep_joined_lesions_in_one_split(seed):
    rng = np.random.default_rng(seed)
    n = 200
    table = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(n)],
            "label": rng.choice(["nv", "mel", "bkl"], size=n),
            "group": [f"L{k}" for k in range(n)],  # one image per lesion
        }
    )
    pairs = pd.DataFrame({"lesion_id_a": [f"L{k}" for k in range(0, 40, 2)]})
    pairs["lesion_id_b"] = [f"L{k}" for k in range(1, 40, 2)]
    split = split_dataset(table, seed=seed, merge_pairs=pairs)
    assert group_leaks(table, split, merge_pairs=pairs) == []
    s = split.set_index("image_id")["split"]
    for k in range(0, 40, 2):
        assert s[f"i{k}"] == s[f"i{k + 1}"]


def test_bad_fractions_and_tables_are_clear_errors():
    table = small_table()
    with pytest.raises(ConfigError, match="nothing for train"):
        split_dataset(table, val=0.5, test=0.5)
    with pytest.raises(ConfigError, match="val fraction"):
        split_dataset(table, val=-0.1)
    with pytest.raises(DataError, match="too few"):
        split_dataset(table.assign(group="same"))
    dup = pd.concat([table, table.iloc[:1]])
    with pytest.raises(DataError, match="more than once"):
        split_dataset(dup)
    with pytest.raises(DataError, match="group"):
        split_dataset(table.drop(columns="group"))


def test_split_file_round_trip(tmp_path):
    table = small_table()
    split = split_dataset(table, seed=0)
    path = write_split(split, tmp_path / "sub" / "split.csv")
    assert path.read_text().splitlines()[0] == "image_id,split"
    back = read_split(path, table)
    pd.testing.assert_frame_equal(back, split)


def test_read_split_names_every_problem(tmp_path):
    table = pd.DataFrame(
        {"image_id": ["a", "b", "c", "d"], "label": ["nv"] * 4, "group": list("abcd")}
    )
    path = tmp_path / "split.csv"
    path.write_text("image_id,split\na,train\nb,valid\nb,test\nzz,test\n")
    with pytest.raises(DataError) as info:
        read_split(path, table)
    msg = str(info.value)
    assert "row 3 has split 'valid'" in msg
    assert "listed more than once: 'b'" in msg
    assert "not in the dataset: 'zz'" in msg
    assert "missing from the file: 'c', 'd'" in msg
    assert str(path) in msg


def test_read_split_bad_files(tmp_path):
    table = pd.DataFrame({"image_id": ["a"], "label": ["nv"], "group": ["a"]})
    with pytest.raises(DataError, match="does not exist"):
        read_split(tmp_path / "nope.csv", table)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,fold\na,train\n")
    with pytest.raises(DataError, match="image_id,split"):
        read_split(wrong, table)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="not a readable CSV"):
        read_split(empty, table)


def test_cli_split_writes_a_grouped_split_file(tmp_path):
    from typer.testing import CliRunner

    from skinclf.cli import app
    from skinclf.data.formats import load_dataset
    from skinclf.data.synthetic import write_sample

    root = write_sample(tmp_path / "ham", format="ham10000", n=12, seed=0, size=16)
    table = load_dataset(root)
    lesions = table["group"].drop_duplicates().tolist()
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"lesion_id_a,lesion_id_b\n{lesions[0]},{lesions[1]}\n")
    out = tmp_path / "split.csv"
    args = ["data", "split", str(root), "--out", str(out), "--calib", "0.1"]
    result = CliRunner().invoke(app, [*args, "--seed", "3", "--merge-duplicates", str(pairs)])
    assert result.exit_code == 0, result.output
    assert "Largest deviation" in result.output and "calib" in result.output
    split = read_split(out, table)
    assert set(split["split"]) == {"train", "val", "test", "calib"}
    merge = pd.read_csv(pairs)
    assert group_leaks(table, split, merge_pairs=merge) == []
    by_group = dict(zip(table["group"], split["split"], strict=True))
    assert by_group[lesions[0]] == by_group[lesions[1]]

    bad = CliRunner().invoke(app, ["data", "split", str(root), "--out", str(out), "--val", "0.9"])
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError)
