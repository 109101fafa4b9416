"""Feature-space scores for out-of-distribution gates, fitted on the training split's features.

Each score is higher for images that look like the training data. `FeatureStats` holds what
they need (class means and shared precision, the background Gaussian of relative Mahalanobis,
the kNN feature bank, the ViM subspace) and is saved as one `.npz` file, so that prediction
and serving never read training images again.

- Mahalanobis (Lee et al., NeurIPS 2018): minus the smallest distance to a class mean under the
  shared covariance (`Mahalanobis`).
- Relative Mahalanobis (Ren et al., 2021, "A simple fix to Mahalanobis distance"): minus the
  smallest squared class distance minus the squared distance under one background Gaussian
  fitted on all training features, which removes the part of the distance that every class
  shares (image statistics unrelated to the lesion).
- kNN (Sun et al., ICML 2022): cosine similarity to the k-th nearest training feature
  (`knn`: k = 10; `knn_k1` ... `knn_k200`: other ranks from the same bank).
- ViM (Wang et al., CVPR 2022): energy of the logits minus a virtual logit, alpha times the norm
  of the feature's residual outside the principal subspace of the training features (origin
  -pinv(W) b); alpha matches the residual norms to the max logits on the training features.
- Stage Mahalanobis (the multi-layer feature ensemble of Lee et al. 2018, with equal weights
  since no OOD data may set them): Mahalanobis on the pooled output of each backbone stage
  (`mahalanobis_block<i>`), and `mahalanobis_stages`, the mean over every stage and the
  pooled features of each one's score standardised by its training images' scores. Measured
  on HAM10000 vs PAD-UFES-20 (benchmarks/results/feature_layers_default.json), the middle
  stages separate the smartphone photos far better (AUROC 0.99) than the pooled features
  (0.89), while keeping the other-clinic ISIC images (AUROC about 0.55 against HAM10000).

The scores read one array per image: the pooled features, then (for the stage scores) the
stages' pooled outputs concatenated (`inference.batch.Inference.score_features`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from skinclf.contracts.score_registry import FEATURE_SCORES, STAGE_SCORES

_EPS = 1e-12

STATS_FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: without stage statistics


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), _EPS, None)


@dataclass(frozen=True)
class Mahalanobis:
    """Class means and the (pseudo-)inverse of the shared covariance of training features."""

    means: np.ndarray  # (C, D)
    precision: np.ndarray  # (D, D)

    def score(self, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Minus the smallest Mahalanobis distance to a class mean (Lee et al., 2018)."""
        x = np.asarray(features, dtype=np.float64)
        out = np.empty(len(x))
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            d2 = np.empty((len(xb), len(self.means)))
            for c, mu in enumerate(self.means):
                diff = xb - mu
                d2[:, c] = ((diff @ self.precision) * diff).sum(axis=1)
            out[start : start + batch_size] = -np.sqrt(np.clip(d2.min(axis=1), 0.0, None))
        return out


def fit_mahalanobis(features: np.ndarray, labels: np.ndarray) -> Mahalanobis:
    """Fit class means and a shared covariance on training features (Lee et al., NeurIPS 2018).

    The covariance is Ledoit-Wolf shrunk and inverted with a pseudo-inverse, so it stays
    stable with fewer samples than feature dimensions. Classes without samples are skipped.
    """
    from sklearn.covariance import LedoitWolf

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    classes = [c for c in np.unique(y) if c >= 0]
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    centred = np.concatenate([x[y == c] - means[i] for i, c in enumerate(classes)])
    cov = LedoitWolf(assume_centered=True).fit(centred).covariance_
    return Mahalanobis(means=means, precision=np.linalg.pinv(cov, hermitian=True))


@dataclass(frozen=True)
class KNN:
    """L2-normalised training features for the k-nearest-neighbour score."""

    bank: np.ndarray  # (M, D), rows of unit length
    k: int = 10

    def score(self, features: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Cosine similarity to the k-th nearest training feature (Sun et al., ICML 2022)."""
        return self.scores_at(features, (self.k,), batch_size)[self.k]

    def scores_at(
        self, features: np.ndarray, ks: tuple[int, ...], batch_size: int = 1024
    ) -> dict[int, np.ndarray]:
        """The score at each neighbour rank in `ks`, from one similarity pass over the bank."""
        q = _l2_normalise(features)
        out = {k: np.empty(len(q)) for k in ks}
        for start in range(0, len(q), batch_size):
            neg = -(q[start : start + batch_size] @ self.bank.T)
            kth = [min(k, len(self.bank)) - 1 for k in ks]
            part = np.partition(neg, sorted(set(kth)), axis=1)  # k-th largest = k-th nearest
            for k, i in zip(ks, kth, strict=True):
                out[k][start : start + batch_size] = -part[:, i]
        return out


def fit_knn(features: np.ndarray, k: int = 10) -> KNN:
    """Store the L2-normalised training features; k is the neighbour rank used (default 10)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    return KNN(bank=_l2_normalise(features), k=k)


def _shrunk_precision(centred: np.ndarray) -> np.ndarray:
    from sklearn.covariance import LedoitWolf

    cov = LedoitWolf(assume_centered=True).fit(centred).covariance_
    return np.linalg.pinv(cov, hermitian=True)


def _squared_distances(x: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(N, K) squared Mahalanobis distances of rows of x to each mean."""
    out = np.empty((len(x), len(means)))
    for k, mu in enumerate(means):
        diff = x - mu
        out[:, k] = ((diff @ precision) * diff).sum(axis=1)
    return out


@dataclass(frozen=True)
class RelativeMahalanobis:
    """Class Gaussians (shared precision) and one background Gaussian of all features."""

    means: np.ndarray  # (C, D)
    precision: np.ndarray  # (D, D)
    background_mean: np.ndarray  # (D,)
    background_precision: np.ndarray  # (D, D)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Minus min_k [MD_k(x) - MD_0(x)] with squared distances (Ren et al. 2021)."""
        x = np.asarray(features, dtype=np.float64)
        md = _squared_distances(x, self.means, self.precision)
        md0 = _squared_distances(x, self.background_mean[None], self.background_precision)
        return -(md - md0).min(axis=1)


def fit_relative_mahalanobis(features: np.ndarray, labels: np.ndarray) -> RelativeMahalanobis:
    x = np.asarray(features, dtype=np.float64)
    maha = fit_mahalanobis(x, labels)
    mean0 = x.mean(axis=0)
    return RelativeMahalanobis(maha.means, maha.precision, mean0, _shrunk_precision(x - mean0))


@dataclass(frozen=True)
class ViM:
    """Origin, an orthonormal basis of the residual space, alpha, and the linear head."""

    origin: np.ndarray  # (D,)
    residual_basis: np.ndarray  # (D, D - d): complement of the principal subspace
    alpha: float
    weight: np.ndarray  # (C, D)
    bias: np.ndarray  # (C,)

    def residual_norm(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64) - self.origin
        return np.linalg.norm(x @ self.residual_basis, axis=1)

    def score(self, features: np.ndarray) -> np.ndarray:
        """logsumexp(logits) - alpha * ||residual||: the log-odds of ViM's in-distribution
        probability, so a monotone transform of minus ViM's OOD score."""
        x = np.asarray(features, dtype=np.float64)
        logits = x @ self.weight.T + self.bias
        return logsumexp(logits, axis=1) - self.alpha * self.residual_norm(x)


def vim_dimension(n_features: int) -> int:
    """Principal dimension: half the feature size, at most 512 (Wang et al. used 512-1000 for
    768-2048 features)."""
    return max(1, min(512, n_features // 2))


def fit_vim(
    features: np.ndarray, weight: np.ndarray, bias: np.ndarray, dim: int | None = None
) -> ViM:
    x = np.asarray(features, dtype=np.float64)
    w, b = np.asarray(weight, dtype=np.float64), np.asarray(bias, dtype=np.float64)
    d = dim or vim_dimension(x.shape[1])
    if not 0 < d < x.shape[1]:
        raise ValueError(f"ViM's principal dimension {d} must be in (0, {x.shape[1]})")
    origin = -np.linalg.pinv(w) @ b
    centred = x - origin
    # eigenvectors of the (uncentred about the origin) second-moment matrix, largest first
    _, vecs = np.linalg.eigh(centred.T @ centred / len(x))
    residual_basis = vecs[:, ::-1][:, d:]
    max_logit = (x @ w.T + b).max(axis=1)
    resid = np.linalg.norm(centred @ residual_basis, axis=1)
    alpha = float(max_logit.mean() / max(resid.mean(), 1e-12))
    return ViM(origin, residual_basis, alpha, w, b)


@dataclass(frozen=True)
class StageMahalanobis:
    """Mahalanobis statistics of each stage's pooled output, and the mean and standard
    deviation of every part's training scores (the stages', then the pooled features')."""

    dims: tuple[int, ...]  # width of each stage's pooled output, in order
    stages: tuple[Mahalanobis, ...]
    score_mean: np.ndarray  # (len(dims) + 1,)
    score_std: np.ndarray  # (len(dims) + 1,)

    def split(self, stages: np.ndarray) -> list[np.ndarray]:
        """The per-stage columns of the concatenated stage outputs."""
        if stages.shape[1] != sum(self.dims):
            raise ValueError(f"stage outputs of width {stages.shape[1]}, expected {sum(self.dims)}")
        return np.split(np.asarray(stages, dtype=np.float64), np.cumsum(self.dims)[:-1], axis=1)

    def block_scores(
        self, stages: np.ndarray, blocks: tuple[int, ...] | None = None
    ) -> dict[int, np.ndarray]:
        """stage index -> its Mahalanobis score, for `blocks` (default: every stage)."""
        parts = self.split(stages)
        wanted = range(len(self.dims)) if blocks is None else blocks
        return {i: self.stages[i].score(parts[i]) for i in wanted}

    def combined(self, block_scores: dict[int, np.ndarray], pooled_score: np.ndarray) -> np.ndarray:
        """Mean of every part's standardised score (`mahalanobis_stages`; `block_scores` of
        every stage)."""
        ordered = [block_scores[i] for i in range(len(self.dims))]
        parts = np.stack([*ordered, pooled_score], axis=1)
        return ((parts - self.score_mean) / self.score_std).mean(axis=1)


def fit_stage_mahalanobis(
    stages: np.ndarray, dims: tuple[int, ...], labels: np.ndarray, pooled_score: np.ndarray
) -> StageMahalanobis:
    """Mahalanobis on each stage's training outputs; `pooled_score`: the pooled features'
    Mahalanobis scores of the same images (for the standardisation of the combination)."""
    parts = np.split(np.asarray(stages, dtype=np.float64), np.cumsum(dims)[:-1], axis=1)
    fitted = tuple(fit_mahalanobis(x, labels) for x in parts)
    train = np.stack([*(m.score(x) for m, x in zip(fitted, parts, strict=True)), pooled_score], 1)
    std = np.clip(train.std(axis=0), _EPS, None)
    return StageMahalanobis(tuple(int(d) for d in dims), fitted, train.mean(axis=0), std)


@dataclass(frozen=True)
class FeatureStats:
    """Everything the feature-space scores need, fitted once on the training features."""

    mahalanobis: Mahalanobis
    rel_mahalanobis: RelativeMahalanobis
    knn: KNN
    vim: ViM | None  # None when the head is not one linear layer
    n_train: int
    fingerprint: str = ""  # of the model whose features these are (e.g. its checkpoint hash)
    stages: StageMahalanobis | None = None  # None: fitted without the stages' outputs

    @property
    def width(self) -> int:
        """Width of the pooled features."""
        return int(self.mahalanobis.means.shape[1])

    def supports(self, name: str) -> bool:
        """Whether these statistics can compute the feature score `name`."""
        if name in STAGE_SCORES:
            if self.stages is None:
                return False
            return name == "mahalanobis_stages" or int(
                name.removeprefix("mahalanobis_block")
            ) < len(self.stages.dims)
        return self.scorer(name) is not None

    def scores(self, features: np.ndarray, names: tuple[str, ...] = FEATURE_SCORES) -> dict:
        """name -> (N,) score, for each requested feature score that these stats support.

        `features`: the pooled features (N, D), followed by the stages' pooled outputs when a
        stage score is asked for (`Inference.score_features`)."""
        x = np.asarray(features)
        pooled, out = x[:, : self.width], {}
        ranks = {n: sc.k for n in names if isinstance(sc := self.scorer(n), KNN)}
        if ranks:  # every kNN rank from one similarity pass
            by_rank = self.knn.scores_at(pooled, tuple(sorted(set(ranks.values()))))
            out.update({n: by_rank[k] for n, k in ranks.items()})
        for name in names:
            scorer = self.scorer(name)
            if scorer is not None and name not in ranks:
                out[name] = scorer.score(pooled)
        staged = [n for n in names if n in STAGE_SCORES and self.supports(n)]
        if staged:
            out.update(self._stage_scores(x, staged, out.get("mahalanobis")))
        return {n: out[n] for n in names if n in out}

    def _stage_scores(
        self, x: np.ndarray, names: list[str], pooled_score: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        assert self.stages is not None
        if x.shape[1] == self.width:
            raise ValueError(
                f"{names[0]} needs the stages' pooled outputs after the pooled features "
                "(infer with stages=True)"
            )
        combined = "mahalanobis_stages" in names
        asked = tuple(
            int(n.removeprefix("mahalanobis_block")) for n in names if n != STAGE_SCORES[0]
        )
        blocks = self.stages.block_scores(x[:, self.width :], None if combined else asked)
        out = {f"mahalanobis_block{i}": s for i, s in blocks.items()}
        if combined:
            if pooled_score is None:
                pooled_score = self.mahalanobis.score(x[:, : self.width])
            out["mahalanobis_stages"] = self.stages.combined(blocks, pooled_score)
        return {n: out[n] for n in names}

    def scorer(self, name: str) -> Mahalanobis | RelativeMahalanobis | KNN | ViM | None:
        """The fitted pooled-feature score called `name` (`knn_k<k>`: the kNN bank at rank
        k); None for a stage score (`supports` says whether those can be computed)."""
        if name not in FEATURE_SCORES or name in STAGE_SCORES:
            return None
        if name.startswith("knn_k"):  # one of KNN_KS, all >= 1
            return KNN(bank=self.knn.bank, k=int(name[5:]))
        return getattr(self, name, None)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays = {
            "format_version": np.array(STATS_FORMAT_VERSION),
            "n_train": np.array(self.n_train),
            "fingerprint": np.array(self.fingerprint),
            "maha_means": self.mahalanobis.means,
            "maha_precision": self.mahalanobis.precision,
            "rmd_background_mean": self.rel_mahalanobis.background_mean,
            "rmd_background_precision": self.rel_mahalanobis.background_precision,
            "knn_bank": self.knn.bank.astype(np.float32),
            "knn_k": np.array(self.knn.k),
        }
        if self.vim is not None:
            arrays.update(
                vim_origin=self.vim.origin,
                vim_residual_basis=self.vim.residual_basis,
                vim_alpha=np.array(self.vim.alpha),
                vim_weight=self.vim.weight,
                vim_bias=self.vim.bias,
            )
        if self.stages is not None:
            arrays.update(_stage_arrays(self.stages))
        from skinclf.atomic import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        """The statistics in `path`; DataError in one sentence for a missing, truncated or
        damaged file, or one of an unreadable format version."""
        import zipfile
        import zlib

        from skinclf.errors import DataError

        path = Path(path)
        try:
            with np.load(path) as z:
                return cls._from_arrays(z, path)
        except DataError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise DataError(
                f"{path}: cannot read feature statistics ({detail}); it is damaged or "
                "truncated: fit it again (or export the model again)."
            ) from None

    @classmethod
    def _from_arrays(cls, z, path: Path) -> FeatureStats:
        from skinclf.errors import DataError

        version = int(z["format_version"]) if "format_version" in z else -1
        if version not in READABLE_VERSIONS:
            raise DataError(
                f"{path}: feature statistics format {version}, expected "
                f"{STATS_FORMAT_VERSION}; predict the training split again to refit them."
            )
        means, precision = z["maha_means"], z["maha_precision"]
        vim = None
        if "vim_origin" in z:
            vim = ViM(
                z["vim_origin"],
                z["vim_residual_basis"],
                float(z["vim_alpha"]),
                z["vim_weight"],
                z["vim_bias"],
            )
        return cls(
            mahalanobis=Mahalanobis(means, precision),
            rel_mahalanobis=RelativeMahalanobis(
                means, precision, z["rmd_background_mean"], z["rmd_background_precision"]
            ),
            knn=KNN(bank=z["knn_bank"].astype(np.float64), k=int(z["knn_k"])),
            vim=vim,
            n_train=int(z["n_train"]),
            fingerprint=str(z["fingerprint"]) if "fingerprint" in z else "",
            stages=_read_stages(z) if "stage_dims" in z else None,
        )


def _stage_arrays(stages: StageMahalanobis) -> dict[str, np.ndarray]:
    arrays = {
        "stage_dims": np.array(stages.dims),
        "stage_score_mean": stages.score_mean,
        "stage_score_std": stages.score_std,
    }
    for i, m in enumerate(stages.stages):
        arrays[f"stage{i}_means"], arrays[f"stage{i}_precision"] = m.means, m.precision
    return arrays


def _read_stages(z) -> StageMahalanobis:
    dims = tuple(int(d) for d in z["stage_dims"])
    fitted = tuple(
        Mahalanobis(z[f"stage{i}_means"], z[f"stage{i}_precision"]) for i in range(len(dims))
    )
    return StageMahalanobis(dims, fitted, z["stage_score_mean"], z["stage_score_std"])


def fit_feature_stats(
    features: np.ndarray,
    labels: np.ndarray,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    knn_k: int = 10,
    fingerprint: str = "",
    stages: np.ndarray | None = None,
    stage_dims: tuple[int, ...] = (),
) -> FeatureStats:
    """Fit every feature-space score on training features (ViM needs the linear head; the
    stage scores need `stages`, each stage's pooled output concatenated, of widths
    `stage_dims`)."""
    x = np.asarray(features, dtype=np.float64)
    rmd = fit_relative_mahalanobis(x, labels)
    maha = Mahalanobis(rmd.means, rmd.precision)
    staged = None
    if stages is not None and len(stage_dims):
        staged = fit_stage_mahalanobis(stages, tuple(stage_dims), labels, maha.score(x))
    return FeatureStats(
        mahalanobis=maha,
        rel_mahalanobis=rmd,
        knn=fit_knn(x, k=knn_k),
        vim=fit_vim(x, weight, bias) if weight is not None and bias is not None else None,
        n_train=len(x),
        fingerprint=fingerprint,
        stages=staged,
    )


__all__ = [
    "FeatureStats",
    "StageMahalanobis",
    "RelativeMahalanobis",
    "ViM",
    "_l2_normalise",
    "fit_feature_stats",
    "fit_relative_mahalanobis",
    "fit_stage_mahalanobis",
    "fit_vim",
]
