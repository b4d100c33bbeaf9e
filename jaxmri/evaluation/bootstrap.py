"""Bootstrap confidence intervals over images that resample whole duplicate groups.

Near-duplicate images are not independent evidence; resampling single images would pretend they are
and make intervals too narrow. Each resample draws as many groups as there are, with replacement, and
takes every image of each drawn group.
"""

import numpy as np

RESAMPLES = 2000


def group_bootstrap(statistic, groups, *, resamples: int = RESAMPLES, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``statistic(rows)`` (rows: an int index array into the images, with
    repeats) over ``resamples`` group resamples. NaN statistics (e.g. a resample with one class) are
    left out of the percentiles."""
    groups = np.asarray(groups)
    ids, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(ids))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(ids), len(ids))
        values.append(statistic(np.concatenate([members[i] for i in drawn])))
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)
