"""How much two segmentations of the same image agree: the adjusted Rand index (Hubert and Arabie 1985).

Used to compare our Felzenszwalb segments with scikit-image's, where exact equality is not expected
(near-ties in the edge order cascade into different merges).
"""

import numpy as np

from scratchdet.errors import InvalidArgumentError


def adjusted_rand_index(labels_a, labels_b):
    """The adjusted Rand index of two labellings of the same pixels: 1 for identical partitions,
    about 0 for independent ones.

    ``ARI = (sum_ij C(n_ij, 2) - E) / (0.5 (sum_i C(a_i, 2) + sum_j C(b_j, 2)) - E)`` with
    ``E = sum_i C(a_i, 2) sum_j C(b_j, 2) / C(n, 2)``, where n_ij counts the pixels labelled i in
    `labels_a` and j in `labels_b`, and a_i, b_j are the row and column sums of that table.

    Args:
        labels_a, labels_b: integer arrays of the same shape, e.g. (H, W) segment ids.

    Returns:
        float.
    """
    if np.shape(labels_a) != np.shape(labels_b):
        raise InvalidArgumentError(f"labellings differ in shape: {np.shape(labels_a)} and {np.shape(labels_b)}")
    a = np.asarray(labels_a).ravel()
    b = np.asarray(labels_b).ravel()
    if a.size == 0:
        raise InvalidArgumentError("the labellings are empty: the index needs at least one pixel")
    n = a.size
    # 1. the contingency table n_ij, as counts of the distinct (i, j) pairs
    _, a_ids = np.unique(a, return_inverse=True)
    _, b_ids = np.unique(b, return_inverse=True)
    pair_keys = a_ids.astype(np.int64) * (b_ids.max() + 1) + b_ids
    n_ij = np.unique(pair_keys, return_counts=True)[1].astype(np.float64)
    a_i = np.bincount(a_ids).astype(np.float64)
    b_j = np.bincount(b_ids).astype(np.float64)

    def pairs(x):
        return x * (x - 1) / 2.0

    # 2. the index, its expectation under random labellings, and its maximum
    index = pairs(n_ij).sum()
    sum_a, sum_b = pairs(a_i).sum(), pairs(b_j).sum()
    expected = sum_a * sum_b / pairs(float(n)) if n > 1 else 0.0
    maximum = 0.5 * (sum_a + sum_b)
    if maximum == expected:  # both labellings trivial (one segment, or all singletons)
        return 1.0
    return float((index - expected) / (maximum - expected))
