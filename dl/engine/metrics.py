"""Classification and rating metrics, coverage, and the bias/variance diagnosis."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``(C, C)`` counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def classification_report(y_true, y_pred, num_classes: int) -> dict:
    """Accuracy, per-class precision/recall/F1 and their macro averages (a class never predicted
    has precision 0; a class absent from y_true is left out of the macro averages)."""
    cm = confusion(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(float)
    predicted, actual = cm.sum(0).astype(float), cm.sum(1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    present = actual > 0
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "precision_macro": float(precision[present].mean()) if present.any() else 0.0,
        "recall_macro": float(recall[present].mean()) if present.any() else 0.0,
        "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {c: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                          "support": int(actual[c])} for c in range(num_classes)},
        "confusion": cm.tolist(),
    }


def rating_errors(y_true, y_pred) -> dict:
    err = np.asarray(y_pred, float) - np.asarray(y_true, float)
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean()))}


def coverage(probabilities, threshold: float) -> float:
    """Share of examples whose top class probability is at least ``threshold``."""
    top = np.asarray(probabilities, float).max(axis=1)
    return float((top >= threshold).mean())


@dataclass(frozen=True)
class Diagnosis:
    verdict: str  # "high bias", "high variance", "high bias and high variance", "good"
    avoidable_bias: float
    variance: float
    advice: str


def bias_variance(train_error: float, dev_error: float, optimal_error: float = 0.0,
                  tolerance: float = 0.02) -> Diagnosis:
    """Compare train error to the optimal (Bayes/human) error and dev error to train error.
    A gap above ``tolerance`` is called high."""
    bias, var = train_error - optimal_error, dev_error - train_error
    high_bias, high_var = bias > tolerance, var > tolerance
    if high_bias and high_var:
        return Diagnosis("high bias and high variance", bias, var,
                         "first a bigger model or longer training, then more data or regularization")
    if high_bias:
        return Diagnosis("high bias", bias, var, "bigger model, train longer, better architecture")
    if high_var:
        return Diagnosis("high variance", bias, var, "more data, regularization (dropout, L2), early stopping")
    return Diagnosis("good", bias, var, "nothing obvious: check the dev/test split matches the target data")


def feature_moments(features: np.ndarray) -> np.ndarray:
    """``[n, Σx (d), Σxxᵀ (d²)]`` of ``features (n, d)`` as one float64 vector: moments from several processes or
    batches add up, and ``frechet_distance`` takes two such sums."""
    f = np.asarray(features, dtype=np.float64)
    return np.concatenate([[len(f)], f.sum(0), (f.T @ f).ravel()])


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets given as ``feature_moments`` sums:
    ``|μa − μb|² + tr(Σa + Σb − 2 (Σa Σb)^½)`` (FID, Heusel et al. 2017, on whatever features are given).
    ``tr (Σa Σb)^½`` is the sum of the square roots of the eigenvalues of ``Σa^½ Σb Σa^½`` (symmetric, so exact
    with ``eigh``)."""
    def gaussian(m):
        n, rest = m[0], m[1:]
        d = int(round((np.sqrt(1 + 4 * len(rest)) - 1) / 2))
        mean = rest[:d] / n
        cov = (rest[d:].reshape(d, d) - n * np.outer(mean, mean)) / max(n - 1, 1)
        return mean, (cov + cov.T) / 2

    (ma, ca), (mb, cb) = gaussian(np.asarray(a)), gaussian(np.asarray(b))
    w, v = np.linalg.eigh(ca)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cb @ root_a), 0, None)).sum()
    return float(((ma - mb) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * cross)
