"""`skinclf run`: the whole job in one command, each step skipped when up to date, redone when a
setting changed, continued after a kill.

One uninterrupted reference run (`skinclf run --sample` on a smaller generated sample, tiny
settings) is shared by the tests; the killed runs are subprocesses stopped by
`skinclf.faults.fault_point` (SKINCLF_FAULT), as in test_faults.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from killing import killed_at  # tests/killing.py
from skinclf.cli import app
from skinclf.errors import ConfigError
from skinclf.pipeline import STATE_FILE, Reporter, RunState, SampleData, Step, run_steps

pytestmark = pytest.mark.slow

SMALL = SampleData(n=8, size=32, ood_n=3, seed=0)
# tiny and single-threaded (the killed subprocess and the in-process runs compute alike); two
# fine-tuning epochs, so a kill while saving the second leaves the first's checkpoint
SETTINGS = [
    "data.image_size=32",
    "transfer.epochs=5",
    "train.epochs=2",
    "train.batch_size=8",
    "trainer.precision=32",
    "trainer.threads=1",
]
EVALUATE = ["--target-risk", "0.3", "--bootstrap", "50", "--no-progress"]
STEPS = [
    "sample",
    "check",
    "split",
    "cache",
    "train",
    "features",
    "predict-val",
    "predict-calib",
    "predict-test",
    "predict-val_corrupted",
    "predict-pad-ufes-20",
    "calibrate",
    "evaluate",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("run-cache")


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def invoke(*args: str | Path):
    """`skinclf run ARGS` in this process, `--sample` generating the SMALL sample."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("skinclf.pipeline.SampleData", lambda: SMALL)
        return CliRunner().invoke(app, ["run", *map(str, args)], catch_exceptions=False)


def sample_args(out: Path, cache: Path, *more: str) -> list[str | Path]:
    return ["--sample", "--out", out, "--cache-dir", cache, *EVALUATE, *SETTINGS, *more]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, cache: Path, one_thread):
    """An uninterrupted `skinclf run --sample` (read-only): its folder and its output."""
    out = tmp_path_factory.mktemp("run") / "ref"
    result = invoke(*sample_args(out, cache))
    assert result.exit_code == 0, result.output
    return out, result.output


def state(out: Path) -> dict:
    return json.loads((out / STATE_FILE).read_text())["steps"]


def eval_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "eval").glob("*.csv"))}


def numbers(out: Path) -> dict:
    """metrics.json without its settings block (which names the input files)."""
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    metrics.pop("settings")
    return metrics


def test_sample_run_ends_with_the_report_and_the_key_numbers(reference):
    out, output = reference
    steps = state(out)
    assert list(steps) == STEPS and {s["status"] for s in steps.values()} == {"done"}
    for name in ("report.html", "metrics.json", "selective.json"):
        assert (out / "eval" / name).is_file()
    assert sorted(eval_files(out)) == [
        "calib.csv",
        "pad-ufes-20.csv",
        "test.csv",
        "val.csv",
        "val_corrupted.csv",
    ]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["policy"]["choice_mode"] == "shifted"  # the gate chosen on corrupted val
    splits = (out / "split.csv").read_text()
    assert ",calib" in splits and ",train" in splits  # the calibration split exists
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["policy"]["fitted_on"] == "calib" and "pad-ufes-20" in metrics["ood"]
    for text in (
        "test: balanced accuracy [95 % CI]",
        "test: selective balanced accuracy at 80 % coverage",
        "pad-ufes-20: OOD detection AUROC",
        "pad-ufes-20: accepted accuracy",
        "synthetic",
        f"report: {out / 'eval' / 'report.html'}",
    ):
        assert text in output, text
    ba = metrics["test"]["balanced_accuracy"]
    assert f"{ba:.3f}" in output


def test_second_identical_call_skips_every_step(reference, cache: Path):
    out, _ = reference
    before = (out / STATE_FILE).read_bytes()
    files = eval_files(out)
    result = invoke(*sample_args(out, cache))
    assert result.exit_code == 0, result.output
    assert "no step ran" in result.output
    assert result.output.count("up to date, skipped") == len(STEPS)
    assert (out / STATE_FILE).read_bytes() == before and eval_files(out) == files


def test_changed_setting_redoes_training_and_the_steps_after_it(
    reference, cache: Path, tmp_path: Path
):
    ref, _ = reference
    out = Path(shutil.copytree(ref, tmp_path / "copy"))  # (copytree keeps the times)
    result = invoke(*sample_args(out, cache, "train.lr=0.003"))
    assert result.exit_code == 0, result.output
    assert "setting train.lr changed (0.001 -> 0.003)" in result.output
    old, new = state(ref), state(out)
    same = [n for n in STEPS if old[n]["fingerprint"] == new[n]["fingerprint"]]
    assert same == ["sample", "check", "split", "cache"]
    assert result.output.count("up to date, skipped") == 4
    assert eval_files(out)["test.csv"] != eval_files(ref)["test.csv"]


def test_an_added_test_set_is_checked_and_predicted_without_training_again(
    reference, cache: Path, tmp_path: Path
):
    from skinclf.data.synthetic import write_sample

    ref, _ = reference
    out = Path(shutil.copytree(ref, tmp_path / "copy"))
    isic = write_sample(tmp_path / "isic", "isic2018", n=2, seed=5, size=32)
    result = invoke(*sample_args(out, cache, "--test", str(isic)))
    assert result.exit_code == 0, result.output
    old, new = state(ref), state(out)
    redone = [n for n in new if old.get(n, {}).get("fingerprint") != new[n]["fingerprint"]]
    assert sorted(redone) == ["check", "evaluate", "predict-isic"]  # not the split, not training
    assert "isic.csv" in eval_files(out)
    assert eval_files(out)["test.csv"] == eval_files(ref)["test.csv"]


def test_two_sets_of_one_format_keep_their_folder_names_everywhere(
    reference, cache: Path, tmp_path: Path
):
    from skinclf.data.synthetic import write_sample

    ref, _ = reference
    out = Path(shutil.copytree(ref, tmp_path / "copy"))
    extra = write_sample(tmp_path / "a" / "isic2018-extra", "isic2018", n=2, seed=5, size=32)
    dev = write_sample(tmp_path / "b" / "isic2018-test-dev", "isic2018", n=2, seed=6, size=32)
    result = invoke(*sample_args(out, cache, "--test", str(extra), "--test", str(dev)))
    assert result.exit_code == 0, result.output
    names = ["isic2018-extra", "isic2018-test-dev"]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert sorted(metrics["external"]) == names  # not isic2018 and isic2018-2
    assert {f"{n}.csv" for n in names} <= set(eval_files(out))
    assert {f"{n}.csv" for n in names} <= {p.name for p in (out / "eval" / "decisions").iterdir()}
    assert set(names) <= set(metrics["policy"]["sets"])
    for name in names:
        assert f"{name}: balanced accuracy [95 % CI]" in result.output


def run_command(out: Path, ref: Path, cache: Path) -> list[str]:
    """`skinclf run` on the reference's generated data (the same images, given by path)."""
    data = ref / "data"
    return [
        "--data", str(data / "ham10000"), "--ood", str(data / "pad-ufes-20"), "--out", str(out),
        "--preset", "sample", "--cache-dir", str(cache), *EVALUATE, *SETTINGS,
    ]  # fmt: skip


def test_killed_in_three_steps_then_the_same_command_ends_like_an_uninterrupted_run(
    reference, cache: Path, tmp_path: Path
):
    ref, _ = reference
    out = tmp_path / "cut"
    args = run_command(out, ref, cache)
    killed_at("run", "write/last.ckpt:after=2", args)  # training, saving epoch 2 (1 is whole)
    assert state(out)["train"]["status"] == "started"
    assert torch.load(out / "run/checkpoints/last.ckpt", weights_only=False)["epoch"] == 0
    killed_at("run", "write/pad-ufes-20.csv", args)  # trained on, then predicting the OOD set
    steps = state(out)
    assert steps["train"]["status"] == "done" and steps["predict-test"]["status"] == "done"
    assert steps["predict-pad-ufes-20"]["status"] == "started"
    killed_at("run", "step/evaluate", args)  # after evaluate's outputs, before the state says so
    assert state(out)["evaluate"]["status"] == "started"

    result = CliRunner().invoke(app, ["run", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "interrupted before: continues where it stopped" in result.output
    assert {s["status"] for s in state(out).values()} == {"done"}
    assert eval_files(out) == eval_files(ref)  # every predictions file, byte for byte
    assert numbers(out) == numbers(ref)
    full = torch.load(ref / "run/checkpoints/best.ckpt", weights_only=False)["state_dict"]
    cut = torch.load(out / "run/checkpoints/best.ckpt", weights_only=False)["state_dict"]
    assert [k for k in full if not torch.equal(full[k], cut[k])] == []
    assert not list(out.rglob("*.tmp"))


def test_a_folder_of_other_files_and_a_missing_dataset_are_refused(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a `skinclf run` output folder"):
        invoke("--data", tmp_path, "--out", tmp_path)
    with pytest.raises(ConfigError, match="--data or --sample, not both"):
        invoke("--sample", "--data", tmp_path, "--out", tmp_path / "new")
    with pytest.raises(ConfigError, match="--ood .*gone does not exist"):
        invoke("--data", tmp_path, "--ood", tmp_path / "gone", "--out", tmp_path / "new")
    assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match="is inside --data"):
        invoke("--data", tmp_path, "--out", tmp_path / "new")
    assert not (tmp_path / "new").exists()


# the step runner alone, on steps that write small files ---------------------------------------


class Quiet(Reporter):
    def __init__(self):
        self.lines: list[str] = []

    def step_start(self, index, total, step, reason) -> None:
        self.lines.append(f"{step.name}: {reason}")

    def step_skip(self, index, total, step) -> None:
        self.lines.append(f"{step.name}: skipped")

    def step_done(self, index, total, step, seconds) -> None:
        pass


def test_steps_are_skipped_redone_with_the_reason_and_resumed(tmp_path: Path):
    source = tmp_path / "source.txt"
    source.write_text("a")
    calls: list[tuple[str, bool]] = []

    def steps(factor: int) -> list[Step]:
        def first(ctx):
            calls.append(("first", ctx.resume))
            (tmp_path / "one.txt").write_text(source.read_text() * factor)

        def second(ctx):
            calls.append(("second", ctx.resume))
            (tmp_path / "two.txt").write_text((tmp_path / "one.txt").read_text() + "!")

        return [
            Step("one", "first", first, {"factor": factor}, [source], [tmp_path / "one.txt"]),
            Step("two", "second", second, {}, [tmp_path / "one.txt"], [tmp_path / "two.txt"]),
        ]

    def run(factor: int = 1) -> list[str]:
        reporter = Quiet()
        run_steps(steps(factor), RunState.load(tmp_path), reporter, progress=False)
        return reporter.lines

    assert run() == ["one: not run before", "two: not run before"]
    assert run() == ["one: skipped", "two: skipped"]
    assert run(2) == [
        "one: redone: setting factor changed (1 -> 2)",
        "two: redone: input one.txt changed",
    ]
    source.write_text("b")
    assert run(2)[0] == "one: redone: input source.txt changed"
    (tmp_path / "two.txt").unlink()
    assert run(2) == ["one: skipped", f"two: redone: its output {tmp_path / 'two.txt'} is missing"]
    saved = RunState.load(tmp_path)
    saved.steps["two"].status = "started"  # as a kill during the step leaves it
    saved.save()
    calls.clear()
    assert run(2) == ["one: skipped", "two: interrupted before: continues where it stopped"]
    assert calls == [("second", True)]
    assert (tmp_path / "two.txt").read_text() == "bb!"


def test_the_run_state_file_reads_and_writes_back_byte_for_byte(tmp_path: Path) -> None:
    """run_state.json as the steps write it (a finished and an interrupted step) loads into
    typed records and saves to the same bytes; a record that is not one is refused by name."""
    parts = {"settings": {"epochs": 2}, "inputs": {"data": "content:ab"}, "needs": {}}
    done = {"status": "done", "fingerprint": "f1", "parts": parts, "outputs": ["a.csv"]}
    steps = {"one": {**done, "seconds": 1.25}, "two": {**done, "status": "started"}}
    del steps["two"]["outputs"]
    text = json.dumps({"version": 1, "steps": steps}, indent=2) + "\n"
    (tmp_path / STATE_FILE).write_text(text)
    state = RunState.load(tmp_path)
    assert state.steps["one"].outputs == ["a.csv"] and state.steps["two"].status == "started"
    state.save()
    assert (tmp_path / STATE_FILE).read_text() == text
    steps["two"]["status"] = "running"
    (tmp_path / STATE_FILE).write_text(json.dumps({"steps": steps}))
    with pytest.raises(ConfigError, match="is not a readable run state; remove it"):
        RunState.load(tmp_path)


def test_a_dataset_folder_copied_afresh_is_the_same_input_and_new_bytes_are_not(tmp_path: Path):
    """Datasets are often copied anew (new modification times, the same bytes): finished steps
    stay finished; a file whose bytes changed under the same size and time redoes them."""
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "images").mkdir(parents=True)
    for k in range(3):
        (data / "images" / f"img{k}.jpg").write_bytes(bytes([k]) * 10)

    def read(ctx) -> None:
        (out / "n.txt").write_text(str(len(list((data / "images").iterdir()))))

    def run() -> list[str]:
        reporter = Quiet()
        step = Step("read", "read", read, {}, [data], [out / "n.txt"])
        run_steps([step], RunState.load(out), reporter, progress=False)
        return reporter.lines

    out.mkdir()
    assert run() == ["read: not run before"]
    copy = tmp_path / "copy"
    shutil.copytree(data, copy, copy_function=shutil.copyfile)  # new modification times
    shutil.rmtree(data)
    copy.rename(data)
    assert run() == ["read: skipped"]
    img = data / "images" / "img1.jpg"
    times = (img.stat().st_atime_ns, img.stat().st_mtime_ns)
    img.write_bytes(bytes([9]) * 10)
    os.utime(img, ns=times)
    assert run() == [f"read: redone: input {data} changed"]


def test_compare_pairs_two_runs_on_a_split_and_an_external_set(reference, tmp_path: Path):
    """`skinclf compare OUT OTHER`: their eval/SPLIT.csv and, with --external, eval/NAME.csv;
    a run whose test predictions are all one class is worse, and paired on the same images."""
    import pandas as pd

    from skinclf.classes import CLASSES
    from skinclf.contracts.predictions import read_predictions
    from skinclf.evaluate.metrics import balanced_accuracy

    out, _ = reference
    other = tmp_path / "other"
    (other / "eval").mkdir(parents=True)
    frame = pd.read_csv(out / "eval" / "test.csv")
    frame["logit_nv"] += 100.0  # every image nv: balanced accuracy 1/7
    for c in CLASSES:
        frame[f"prob_{c}"] = float(c == "nv")
    frame.to_csv(other / "eval" / "test.csv", index=False)
    pad = "pad-ufes-20.csv"
    (other / "eval" / pad).write_bytes((out / "eval" / pad).read_bytes())
    result_file = tmp_path / "cmp.json"
    args = ["compare", str(out), str(other), "--external", "pad-ufes-20", "--out", str(result_file)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    found = json.loads(result_file.read_text())
    assert set(found) == {"test", "pad-ufes-20"}
    test = read_predictions(out / "eval" / "test.csv")
    assert found["test"]["a"]["balanced_accuracy"] == pytest.approx(
        balanced_accuracy(test.y, test.pred)
    )
    assert found["test"]["b"]["balanced_accuracy"] == pytest.approx(1 / 7)
    assert found["test"]["a"]["n"] == test.n
    assert found["pad-ufes-20"]["paired_bootstrap_balanced_accuracy"]["difference"] == 0.0
