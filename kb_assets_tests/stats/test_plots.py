import io
import warnings

import numpy as np
import pytest
from matplotlib.image import imread

from kb_assets.stats.plots import pc_scatter_png, scree_plot_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _pixels(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    return imread(io.BytesIO(png), format="png")


def test_scree_plot_is_a_png_of_the_set_size():
    ratio = np.array([0.4, 0.2, 0.1, 0.05, 0.02])
    assert _pixels(scree_plot_png(ratio)).shape[:2] == (350, 600)


def test_pc_scatter_is_a_png_and_checks_its_inputs():
    scores = np.random.default_rng(0).normal(size=(40, 2))
    assert _pixels(pc_scatter_png(scores, ["case", "control"] * 20)).shape[:2] == (450, 500)
    with pytest.raises(ValueError, match=r"need subjects × 2 scores and one label per subject, got \(40, 2\) and 3"):
        pc_scatter_png(scores, ["a", "b", "c"])


def test_pc_scatter_of_a_hundred_batches_leaves_the_legend_out_without_a_layout_warning():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(400, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = _pixels(pc_scatter_png(scores, [f"batch_{i % 100:03d}" for i in range(400)]))
    assert image.shape[:2] == (450, 500)
