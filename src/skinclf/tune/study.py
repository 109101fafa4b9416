"""Open (create, join or continue) a study: sampler, pruner, and the checks that a worker joins
the study it means to (same stage, split and search space)."""

from __future__ import annotations

import os
import warnings

from skinclf.config import RunConfig
from skinclf.errors import ConfigError
from skinclf.tune.space import baseline_point, distributions

HEAD_WARMUP_EPOCHS = 5  # a head trial is not pruned before this many epochs (of 10 to 60)


def make_pruner(name: str, cfg: RunConfig, stage: str = "finetune"):
    """median: stop a trial whose epoch score trails the median of earlier trials at that
    epoch (after 3 complete trials; fine-tuning from its 2nd epoch, the head from its 6th);
    hyperband: successive halving over 1 .. train.epochs epochs (the head: up to the epochs
    of its first finished trial); none: every trial runs to its end."""
    import optuna

    head = stage == "head"
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        top = "auto" if head else max(cfg.train.epochs, 1)
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=top, reduction_factor=3)
    warmup = HEAD_WARMUP_EPOCHS if head else 1
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup)


def sampler_seed(job, trials: int) -> int:
    """A continued study does not repeat the first run's draws; workers of one study (and
    processes sharing a storage) do not draw the same points."""
    shared = os.getpid() if job.shared else 0
    return job.cfg.seed + trials + 1009 * job.worker + shared


def open_study(storage, job, split_hash: str, log=lambda _: None):
    """The study `job.study_name` in `storage` (created when missing: load_if_exists)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # constant_liar is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            study_name=job.study_name,
            storage=storage,
            load_if_exists=True,
            direction="maximize",
            pruner=make_pruner(job.pruner, job.cfg, job.stage),
        )
        trials = len(study.get_trials(deepcopy=False))
        study.sampler = optuna.samplers.TPESampler(
            seed=sampler_seed(job, trials), constant_liar=True
        )
    _check_joined(study, job, split_hash)
    if job.baseline and trials == 0:
        outside = enqueue_baseline(study, job)
        if outside:
            log(f"no baseline trial: the preset's {', '.join(outside)} lies outside the space")
    return study


def enqueue_baseline(study, job) -> list[str]:
    """A new study's first trial is the run's own settings (the preset, untuned), marked
    `baseline`, so that the study itself says what the search gained over them; none when a
    setting lies outside the space (returned as `key=value`s)."""
    point, outside = baseline_point(getattr(job.space, job.stage), job.cfg)
    if outside:
        return outside
    with warnings.catch_warnings():  # enqueue_trial(user_attrs=) is marked experimental
        warnings.simplefilter("ignore", UserWarning)
        study.enqueue_trial(point, user_attrs={"baseline": True}, skip_if_exists=True)
    return []


def _check_joined(study, job, split_hash: str) -> None:
    """Same stage, same split, compatible search space as the study's earlier trials."""
    from optuna.distributions import check_distribution_compatibility

    where = f"Study '{study.study_name}' ({redacted(job.url)})"
    marks = {"stage": job.stage, "split_sha256": split_hash}
    for key, value in marks.items():
        old = study.user_attrs.get(key)
        if old is None:
            study.set_user_attr(key, value)
        elif old != value:
            what = f"--stage {old}" if key == "stage" else "another split"
            raise ConfigError(
                f"{where} was started with {what}; use another --study name (or, for the "
                "split, pass the study's own split.csv with --split)."
            )
    new = distributions(getattr(job.space, job.stage))
    for trial in study.get_trials(deepcopy=False):
        for key, dist in trial.distributions.items():
            if key not in new:
                continue
            try:
                check_distribution_compatibility(dist, new[key])
            except ValueError:
                raise ConfigError(
                    f"{where} searched {key} over {dist}, which the search space's {new[key]} "
                    "cannot continue; use another --study name or restore that space."
                ) from None


def redacted(url: str) -> str:
    """A storage URL without its password."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        user, host = rest.rsplit("@", 1)
        return f"{scheme}://{user.split(':', 1)[0]}@{host}"
    return url
