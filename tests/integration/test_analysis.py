"""Cross-modal retrieval, missing-modality and occlusion robustness: checked against hand computations.

The half that trains, builds or starts commands of its own; the in-process checks are tests/unit/test_analysis.py.
"""

from configs import video_only
from harjax.training import loop
from tests.conftest import read_metrics, small_config


def test_no_retrieval_without_the_contrastive_term(tmp_path):
    config = small_config(video_only)
    loop.train_and_evaluate(config, str(tmp_path))
    assert not any(key.startswith("eval/retrieval") for record in read_metrics(str(tmp_path)) for key in record)
