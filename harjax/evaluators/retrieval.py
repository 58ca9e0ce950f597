"""Cross-modal retrieval between the contrastive video and sensor embeddings of a split: Recall@1/5/10 both ways.

Yields 'retrieval_v2s_r1', '_r5', '_r10' and 'retrieval_s2v_r1', ...; runs for models with the contrastive term.
"""

from __future__ import annotations

from collections.abc import Iterator

import ml_collections
import numpy as np

from harjax.data import batch as batch_lib
from harjax.evaluators import common
from harjax.models import har_model


def applies(config: ml_collections.ConfigDict) -> bool:
    """Only models with the contrastive term have the embeddings to retrieve with."""
    return har_model.has_contrastive_heads(config)


RECALL_AT = (1, 5, 10)


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def retrieval_recalls(video: np.ndarray, sensor: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    """Cross-modal Recall@1/5/10 by cosine similarity, video-to-sensor (v2s) and sensor-to-video (s2v).

    video, sensor [N, D]: example i pairs video i with sensor i. Where examples are views of one recording
    (`groups`: equal ids share their sensor data, e.g. the cameras of an MMAct trial), each recording is one sensor
    candidate: a view's query hits when its recording is in the top k, and a recording's query hits when any of
    its views is (as image-text retrieval counts any caption of an image). Ties count against the query, so a
    collapsed embedding scores chance, not 1.
    """
    video, sensor = _unit(video), _unit(sensor)
    groups = np.arange(len(video)) if groups is None else groups
    _, first, owner = np.unique(groups, return_index=True, return_inverse=True)  # owner [N]: each view's recording
    recordings = len(first)
    similarity = video @ sensor[first].T  # [N videos, G recordings]
    correct = similarity[np.arange(len(video)), owner]  # [N]
    wrong = np.arange(recordings)[None, :] != owner[:, None]  # [N, G]
    v2s_rank = ((similarity >= correct[:, None]) & wrong).sum(axis=1)
    best = np.full(recordings, -np.inf)
    np.maximum.at(best, owner, correct)  # each recording's most similar own view
    s2v_rank = ((similarity.T >= best[:, None]) & wrong.T).sum(axis=1)  # [G]
    return {
        f"retrieval_{direction}_r{k}": float(np.mean(rank < k))
        for direction, rank in (("v2s", v2s_rank), ("s2v", s2v_rank))
        for k in RECALL_AT
    }


class Evaluator:
    """Ranks every recording's sensor embedding for each video, and every video for each recording."""

    def __init__(self, predict_fn: common.PredictFn, context: common.Context):
        self._predict_fn = predict_fn

    def run(self, state, step: int) -> Iterator[tuple[str, float]]:
        rows = self._predict_fn(state).rows
        yield from retrieval_recalls(
            rows["video_embedding"], rows["sensor_embedding"], rows.get(batch_lib.TRIAL)
        ).items()
