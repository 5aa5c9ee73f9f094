"""The quality ruler: a classifier two-sample test (C2ST, Lopez-Paz and Oquab, ICLR 2017).

A classifier learns to tell reference images (the held-out split) from samples; its accuracy on
images it was not fitted to is the measure. 0.5: the two sets cannot be told apart; 1.0: every
image is told apart. Unlike FD and KD, whose small-disturbance readings sit inside their own
noise (docs/design.md, The quality ruler), the accuracy rises with noise, blur, lost contrast, salt and pepper and
black rectangles alike on the embedded faces (`ambient extractor-check`, in the DAG), and it
tells the degenerate generators (the mean face repeated, noise matched to the pixel statistics)
at once (tests/test_c2st.py).

The classifier is an L2-regularised logistic regression on standardised features (the scaler
and the classifier fitted on the training folds only). Both sets are cut to the same size n
(a seeded subset of the larger), then stratified k-fold cross-validation; this repeats with
fresh subsets and folds, and the spread is the standard deviation over the repeats. Logistic
regression rather than a network: 60 reference images leave no room for a flexible classifier,
and a linear one on filter-bank energies already separates every disturbance above its
smallest level. Deterministic given the seed; numpy and scipy only.
"""

from __future__ import annotations

import numpy as np

FOLDS = 5
REPEATS = 5
C = 0.01  # inverse L2 strength (sklearn's convention): strong, since n is small against the feature dimension


def _fit_logistic(x: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    """Weights (D + 1, bias last) minimising sum log-loss + ||w||^2 / (2c), by L-BFGS."""
    from scipy.optimize import minimize  # here: the claims and the README tables import this module's names

    xb = np.hstack([x, np.ones((len(x), 1))])
    sign = 2.0 * y - 1.0

    def loss(w):
        z = sign * (xb @ w)
        reg = w[:-1] @ w[:-1] / (2 * c)
        grad_z = -sign * np.exp(-np.logaddexp(0.0, z))  # d/dz log(1 + e^-z), stable
        grad = xb.T @ grad_z
        grad[:-1] += w[:-1] / c
        return np.logaddexp(0.0, -z).sum() + reg, grad

    res = minimize(loss, np.zeros(xb.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 1000})
    return res.x


def c2st_key(extractor: str, ref_name: str = "") -> str:
    """The ruler's column in the features of `extractor`, suffixed by its reference: c2st_filterbank_heldout."""
    return f"c2st_{extractor}" + (f"_{ref_name}" if ref_name else "")


def rises(accs: list[float], stds: list[float], n: float = 1.0) -> bool:
    """Does the accuracy rise with a disturbance's levels? No fall from one level to the next beyond n x
    the two levels' std sum, and a rise from the first to the last beyond n x theirs."""
    steps = all(b >= a - n * (sa + sb) for a, b, sa, sb in zip(accs, accs[1:], stds, stds[1:]))
    return steps and accs[-1] - accs[0] > n * (stds[0] + stds[-1])


def _folds(y: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Stratified fold labels: each class shuffled and dealt round-robin over k folds."""
    fold = np.empty(len(y), dtype=int)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold[idx] = np.arange(len(idx)) % k
    return [np.flatnonzero(fold == i) for i in range(k)]


def accuracy_once(ref: np.ndarray, other: np.ndarray, n: int, rng: np.random.Generator, folds: int, c: float) -> float:
    a = ref[rng.permutation(len(ref))[:n]]
    b = other[rng.permutation(len(other))[:n]]
    x = np.concatenate([a, b]).astype(np.float64)
    y = np.r_[np.zeros(n), np.ones(n)]
    correct = 0
    for test in _folds(y, folds, rng):
        train = np.setdiff1d(np.arange(len(y)), test)
        mu, sd = x[train].mean(0), x[train].std(0)
        sd[sd < 1e-12] = 1.0  # a constant feature carries nothing; keep it finite
        w = _fit_logistic((x[train] - mu) / sd, y[train], c)
        z = np.hstack([(x[test] - mu) / sd, np.ones((len(test), 1))]) @ w
        correct += int(((z > 0) == (y[test] == 1)).sum())
    return correct / len(y)


def two_sample_test(
    ref: np.ndarray,
    other: np.ndarray,
    seed: int = 0,
    folds: int = FOLDS,
    repeats: int = REPEATS,
    c: float = C,
    max_per_class: int | None = None,
) -> dict:
    """Cross-validated accuracy of telling `other` from `ref` (feature arrays (N, D)), its spread over
    `repeats` draws of subsets and folds, and the settings. Each class has n = min(len(ref),
    len(other), max_per_class) images."""
    ref, other = np.asarray(ref), np.asarray(other)
    n = min(len(ref), len(other), max_per_class or len(ref))
    if n < folds or ref.ndim != 2 or other.ndim != 2 or ref.shape[1] != other.shape[1]:
        raise ValueError(
            f"C2ST needs two feature arrays (N, D) of one D with at least {folds} rows each, got "
            f"{ref.shape} and {other.shape}"
        )
    if not (np.isfinite(ref).all() and np.isfinite(other).all()):
        raise ValueError("C2ST: the features hold NaN or infinite values (broken samples?)")
    accs = [accuracy_once(ref, other, n, np.random.default_rng([seed, r]), folds, c) for r in range(repeats)]
    return {
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "n_per_class": int(n),
        "folds": int(folds),
        "repeats": int(repeats),
        "classifier": f"logistic regression, L2 (C={c:g}), standardised features",
    }
