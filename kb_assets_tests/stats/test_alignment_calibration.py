"""Calibration: with brain and label unrelated to the genes (but shifted by covariates and sites), the permutation
p-values are uniform: at each level α the share of seeds with p ≤ α lies in the binomial 99% interval."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.stats

from kb_assets.stats.alignment import align_fold
from kb_assets_tests.stats.test_alignment import SMALL, synthetic_cohort

SEEDS = 120
LEVELS = (0.05, 0.2, 0.5)


def test_null_p_values_are_uniform_over_seeds():
    settings = replace(SMALL, n_permutations=99)
    p_values = {"heldout_r1": [], "fwe_any": [], "label_auc": []}
    for seed in range(SEEDS):
        data, _ = synthetic_cohort(1000 + seed, n_train=120, n_heldout=40, effect=0.0)
        result = align_fold(data, settings)
        p_values["heldout_r1"].append(result.canonical["p_value"].iloc[0])
        p_values["fwe_any"].append(result.canonical["p_fwe"].min())  # "some component significant"
        p_values["label_auc"].append(result.prediction.set_index("target")["p_value"]["label"])
    for name, values in p_values.items():
        values = np.asarray(values)
        for level in LEVELS:
            low, high = scipy.stats.binom.interval(0.99, SEEDS, level)
            hits = int(np.sum(values <= level + 1e-12))
            assert low <= hits <= high, f"{name}: {hits} of {SEEDS} seeds at p ≤ {level} (99% interval {low}–{high})"
