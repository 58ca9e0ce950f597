"""A ridge classifier on fixed features, fitted in closed form with its penalty chosen by leave-one-out.

MiniRocket's features win on small sets with the classifier they were designed for, not with a head trained by
gradient descent: on PickupGestureWiimoteZ the same harjax features score 0.78 out of fold under a trained Dense
head and 0.87 under ridge (benchmarks/RESULTS.md). This is scikit-learn's RidgeClassifierCV, which aeon's
MiniRocketClassifier uses: one-vs-rest regression on targets +-1 with an intercept, the penalty chosen among
`ALPHAS` by the exact leave-one-out squared error of the targets (an identity of linear smoothers, so every
training example is held out once at the cost of one eigendecomposition). Leave-one-out rather than a held-out
validation split: the penalty is one number chosen from all the training examples' held-out errors, and on a set
of 40 recordings a 20% split would leave 8 to choose it and 32 to fit.

The ridge's scores are not log-probabilities. One scale, chosen by the leave-one-out predictions' likelihood
(`calibration_scale`), turns them into logits whose softmax is a calibrated probability: argmax, and so accuracy,
is unchanged, while metrics of probabilities, ensembles that average them and streaming's confidence read a real
probability.
"""

from __future__ import annotations

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from harjax import errors

ALPHAS = np.logspace(-3, 3, 10)  # RidgeClassifierCV's grid in aeon's MiniRocketClassifier
SCALES = np.logspace(-1, 3, 41)  # candidate logit scales for the calibration
FITTED = ("kernel", "bias", "alpha", "loo_accuracy")  # the classifier's variables in the 'batch_stats' collection


@dataclasses.dataclass(frozen=True)
class Fit:
    kernel: np.ndarray  # [F, C]: the calibrated scores' weights
    bias: np.ndarray  # [C]
    alpha: float  # the penalty chosen
    loo_accuracy: float  # the leave-one-out accuracy at that penalty: the classifier's held-out score


def memory_bytes(num_examples: int, num_features: int) -> int:
    """Host memory the fit needs: the features and their centred copy in float64, and the eigendecomposition."""
    rank = min(num_examples, num_features)
    return 8 * (2 * num_examples * num_features + 2 * rank * rank + rank * num_examples)


def check_memory(num_examples: int, num_features: int) -> None:
    """Refuses a fit that would not fit the host's free memory, naming the sizes and the setting to lower."""
    needed = memory_bytes(num_examples, num_features)
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if needed > free:
        raise errors.ConfigError(
            f"config.model.head='ridge': its fit on {num_examples} training examples of {num_features} features "
            f"needs {needed / 2**30:.1f} GiB of host memory and {free / 2**30:.1f} GiB is free; lower "
            "config.model.minirocket.num_features"
        )


def targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[N] class indices -> [N, C] one-vs-rest targets: +1 for the class, -1 for the others."""
    return np.where(labels[:, None] == np.arange(num_classes), 1.0, -1.0)


def calibration_scale(scores: np.ndarray, labels: np.ndarray) -> float:
    """The scale s (among SCALES) whose softmax(s * scores) gives held-out `scores` [N, C] the least log loss."""
    losses = []
    for scale in SCALES:
        logits = scale * scores
        logits = logits - logits.max(axis=1, keepdims=True)
        log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        losses.append(-log_probabilities[np.arange(len(labels)), labels].mean())
    return float(SCALES[int(np.argmin(losses))])


def fit(features: np.ndarray, labels: np.ndarray, num_classes: int) -> Fit:
    """The ridge classifier of features [N, F] and labels [N], penalty and scale chosen by leave-one-out.

    With centred X = U diag(s) V^T and shrinkages d_j = s_j^2 / (s_j^2 + alpha), the fitted targets are
    Y_mean + U diag(d) U^T (Y - Y_mean) and example i's leverage h_i = 1/N + sum_j U_ij^2 d_j; its leave-one-out
    prediction is y_i - (y_i - fitted_i) / (1 - h_i). U and s come from the eigendecomposition of the smaller of
    X X^T and X^T X.
    """
    x = np.asarray(features, np.float64)
    count = len(x)
    y = targets(np.asarray(labels), num_classes)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    centred, y_centred = x - x_mean, y - y_mean
    if count <= x.shape[1]:
        eigenvalues, left = np.linalg.eigh(centred @ centred.T)  # left: U [N, N]
    else:
        eigenvalues, left = np.linalg.eigh(centred.T @ centred)  # V [F, F]
    kept = eigenvalues > 1e-12 * max(eigenvalues.max(), 1e-300)  # the rank: null directions fit nothing
    eigenvalues, left = eigenvalues[kept], left[:, kept]
    if count > x.shape[1]:
        left = centred @ left / np.sqrt(eigenvalues)  # U = X V diag(1 / s) [N, r]
    projected = left.T @ y_centred  # U^T Y [r, C]
    best = None
    for alpha in ALPHAS:
        shrinkage = eigenvalues / (eigenvalues + alpha)  # [r]
        fitted = y_mean + left @ (shrinkage[:, None] * projected)  # [N, C]
        leverage = 1.0 / count + (left**2) @ shrinkage  # [N]
        held_out = y - (y - fitted) / (1.0 - leverage)[:, None]
        error = float(np.mean((y - held_out) ** 2))
        if best is None or error < best[0]:
            best = (error, float(alpha), held_out)
    _, alpha, held_out = best
    # W = X^T U diag(1 / (s^2 + alpha)) U^T Y: the ridge solution, in whichever space was decomposed
    kernel = centred.T @ (left @ (projected / (eigenvalues + alpha)[:, None]))  # [F, C]
    bias = y_mean - x_mean @ kernel
    scale = calibration_scale(held_out, np.asarray(labels))
    return Fit(
        kernel=(scale * kernel).astype(np.float32),
        bias=(scale * bias).astype(np.float32),
        alpha=alpha,
        loo_accuracy=float(np.mean(held_out.argmax(axis=1) == np.asarray(labels))),
    )


class RidgeClassifier(nn.Module):
    """features [B, F] -> logits [B, C]: the fitted ridge (fit), kept in 'batch_stats', never trained."""

    num_classes: int

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        size = features.shape[-1]
        kernel = self.variable("batch_stats", "kernel", jnp.zeros, (size, self.num_classes)).value
        bias = self.variable("batch_stats", "bias", jnp.zeros, (self.num_classes,)).value
        for name in ("alpha", "loo_accuracy"):  # recorded with the model: what the fit chose and its held-out score
            self.variable("batch_stats", name, jnp.zeros, ())
        return jnp.dot(features.astype(jnp.float32), jax.lax.stop_gradient(kernel)) + jax.lax.stop_gradient(bias)
