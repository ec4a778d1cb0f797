"""Issue 17 probe cases ("what a careful user still hits"): exports and reproducibility.

Each test is one reviewer's observation on main at the time (items 1, 4, 5, 12 and the export part of 15), written to
fail there and pass once fixed; kept so that the next probe starts from them.
"""

from __future__ import annotations

import pytest

from lora_ft.config import config_from_dict
from lora_ft.evaluate import evaluate_run
from lora_ft.train import train
from tiny_runs import tiny_run_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    """A trained two-epoch LoRA run on a random-weight tiny GPT-2 (model.random_init), with epoch checkpoints."""
    return train(config_from_dict(tiny_run_config(tmp_path_factory.mktemp("item1") / "run")))


# ----------------------------------------------------------------------------------------------------------- item 1


def test_item1_random_init_eval_is_reproducible(random_run):
    def final_predictions():
        (evaluation,) = evaluate_run(random_run, meteor=False)
        return (random_run / evaluation.predictions_file).read_text()

    first = final_predictions()
    assert final_predictions() == first
    evaluate_run(random_run, epochs="all", meteor=False)
    # The epoch-2 checkpoint holds the same tensors as the final weights: the same model, the same decoding.
    assert (random_run / "predictions-test-epoch2.txt").read_text() == first
