"""Several `skinclf tune` workers on one study on a PostgreSQL server; a worker killed with
SIGKILL mid-trial leaves a failed trial that is retried (Optuna's heartbeat), not a stuck one.

The server is a throw-away cluster under a temporary folder (initdb + pg_ctl of Debian's
PostgreSQL), started once per session and stopped afterwards. As root, initdb refuses to run,
so the cluster belongs to the `postgres` (or `nobody`) user. Without PostgreSQL the tests are
skipped with the reason, except on CI (the variable CI set), where they fail instead;
`.ci/run` installs Debian's `postgresql` and exports SKINCLF_PG_BINDIR.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from skinclf.config import load_config, load_search_space
from skinclf.tune import TuneOptions, tune

BINDIR_ENV = "SKINCLF_PG_BINDIR"
HEARTBEAT = 1  # seconds; a trial is stale after 3 missed beats
SETTINGS = ["--preset", "sample", "data.image_size=32", "transfer.epochs=3"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is needed on CI: {reason}")
    pytest.skip(reason)


def _bindir() -> Path | None:
    """initdb's folder: $SKINCLF_PG_BINDIR, pg_config --bindir, /usr/lib/postgresql/*/bin."""
    candidates = [os.environ.get(BINDIR_ENV, "")]
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _as_owner(folder: Path) -> list[str]:
    """The command prefix that runs PostgreSQL's tools as a non-root user (initdb refuses
    root), after giving that user `folder`."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            os.chown(folder, user.pw_uid, user.pw_gid)
            return ["runuser", "-u", name, "--"]
    _unavailable("running as root, and there is no postgres/nobody user and runuser to run initdb")
    return []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """postgresql+psycopg://skinclf@127.0.0.1:PORT/postgres of a throw-away cluster."""
    if importlib.util.find_spec("psycopg") is None:
        _unavailable("psycopg is not installed (pip install 'skinclf[postgres]')")
    bindir = _bindir()
    if bindir is None:
        _unavailable(f"no initdb found (set {BINDIR_ENV}, or install Debian's postgresql)")
    assert bindir is not None
    folder = Path(tempfile.mkdtemp(prefix="skinclf-pg-"))
    prefix = _as_owner(folder)
    data, port = folder / "data", _free_port()
    options = f"-k {folder} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
    initdb = [*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "skinclf"]
    start = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log")]
    start += ["-w", "-t", "60", "-o", options, "start"]
    for cmd in (initdb + ["--no-sync"], start):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            _unavailable(f"{Path(cmd[len(prefix)]).name} failed: {done.stderr.strip()[-300:]}")
    try:
        yield f"postgresql+psycopg://skinclf@127.0.0.1:{port}/postgres"
    finally:
        stop = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-m", "immediate", "stop"]
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def small_space(tmp_path: Path) -> Path:
    """A config file whose head space has two settings (each trial: 3 epochs on features)."""
    path = tmp_path / "space.yaml"
    space = {
        "model.dropout": {"low": 0.0, "high": 0.5},
        "transfer.lr": {"low": 1e-4, "high": 1e-2, "log": True},
    }
    path.write_text(yaml.safe_dump({"tune": {"head": space}}))
    return path


def _worker(
    data: Path,
    out: Path,
    cache: Path,
    url: str,
    study: str,
    trials: int,
    config: Path,
    fault: str = "",
):
    cmd = [sys.executable, "-m", "skinclf", "tune", "--data", str(data), "--out", str(out)]
    cmd += ["--storage", url, "--study", study, "--trials", str(trials), "--config", str(config)]
    cmd += ["--heartbeat", str(HEARTBEAT), "--cache-dir", str(cache), "--no-progress", *SETTINGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "SKINCLF_FAULT": fault}
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def _load(url: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=url)


def test_two_workers_share_one_study_and_every_trial_is_recorded_once(
    postgres_url: str, ham_sample: Path, small_space: Path, tmp_path: Path
) -> None:
    from optuna.trial import TrialState

    out, cache = tmp_path / "study", tmp_path / "cache"
    workers = [_worker(ham_sample, out, cache, postgres_url, "pair", 6, small_space) for _ in "ab"]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(outputs)
    trials = _load(postgres_url, "pair").trials
    assert {t.state for t in trials} == {TrialState.COMPLETE}  # none lost, none left running
    assert len(trials) >= 6
    logged = sorted(int(n) for o in outputs for n in re.findall(r"^trial (\d+): val", o, re.M))
    assert logged == sorted(t.number for t in trials)  # each trial ran once, in one worker
    assert set(trials[0].params) == {"model.dropout", "transfer.lr"}  # the file's space
    assert (out / "best.yaml").is_file() and (out / "split.csv").is_file()


def test_a_worker_killed_mid_trial_leaves_a_failed_trial_that_is_retried(
    postgres_url: str, ham_sample: Path, small_space: Path, tmp_path: Path
) -> None:
    from optuna.trial import TrialState

    out, cache = tmp_path / "study", tmp_path / "cache"
    killed = _worker(
        ham_sample, out, cache, postgres_url, "kill", 4, small_space, "tune-trial:after=2"
    )
    output = killed.communicate(timeout=600)[0]
    assert killed.returncode == -signal.SIGKILL, output
    before = _load(postgres_url, "kill").trials
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]  # as left
    time.sleep(3 * HEARTBEAT + 1.5)  # its last heartbeat is past the grace period

    cfg = load_config("sample", small_space, SETTINGS[2:])
    space = load_search_space("sample", small_space)
    options = TuneOptions(
        trials=3, cache_dir=cache, storage=postgres_url, study_name="kill", heartbeat=HEARTBEAT,
        space=space,
    )  # fmt: skip
    study = tune(ham_sample, out, cfg, options, progress=False, log=lambda *_: None)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, *[TrialState.COMPLETE] * 2]
    dead, retried = study.trials[1], study.trials[2]
    assert retried.params == dead.params == before[1].params  # the killed trial, run again
    assert retried.system_attrs["failed_trial"] == dead.number
