"""`nearest_neighbors`: the training points most similar to an anchor in an embedding.
"""

from __future__ import annotations

import numpy as np

from klomflow.forget_sets.ranking import METRICS, check_choice, check_size, rank_order

# ---------------------------------------------------------------------------
# nearest_neighbors (section 4)


def training_rows(embedding, n_train: int, n_points: int):
    """The training rows of an embedding file's array: [n_train or n_points, d] -> [n_train, d]."""
    embedding = np.asarray(embedding)
    if embedding.ndim != 2:
        raise ValueError(f"path: embeddings must be 2-D [points, features], got shape "
                         f"{embedding.shape}")
    if len(embedding) not in (n_train, n_points):
        raise ValueError(f"path: embeddings have {len(embedding)} rows; expected {n_train} "
                         f"(training points) or {n_points} (training then validation points)")
    return embedding[:n_train]


def nearest_neighbors(embeddings, anchor: int, size: int, metric: str = "cosine",
                      include_anchor: bool = True):
    """The `size` training points most similar to `anchor` (section 4, steps 1-3).

    embeddings: one [n_train, d_m] array per model (a single 2-D array is one
    model); features of different models are not aligned, so the similarities
    are averaged, never the features. cosine: rows normalised, a zero row has
    similarity 0 (a zero anchor row is an error); euclidean: minus the distance.
    With include_anchor the anchor is always a member (a near-duplicate may tie
    it at similarity 1) and size - 1 others follow. Returns (sorted int64
    indices, mean similarity float64 [n_train]).
    """
    check_choice("metric", metric, METRICS)
    if isinstance(embeddings, np.ndarray) and embeddings.ndim == 2:
        embeddings = [embeddings]
    embeddings = list(embeddings)
    if not embeddings:
        raise ValueError("path: no embeddings given")
    n = None
    for model, embedding in enumerate(embeddings):
        shape = np.shape(embedding)
        if len(shape) != 2 or shape[1] < 1:
            raise ValueError(f"path: embedding {model} must be 2-D [n_train, features], got "
                             f"shape {shape}")
        if n is None:
            n = shape[0]
        elif shape[0] != n:
            raise ValueError(f"path: embedding {model} has {shape[0]} rows, embedding 0 has {n}")
    if isinstance(anchor, bool) or not isinstance(anchor, (int, np.integer)) \
            or not 0 <= anchor < n:
        raise ValueError(f"anchor: {anchor!r} is not a training index (0..{n - 1})")
    size = check_size(size, n if include_anchor else n - 1,
                       "training points" if include_anchor else "training points besides "
                       "the anchor")
    similarity = np.zeros(n)
    for model, embedding in enumerate(embeddings):
        features = np.asarray(embedding, dtype=np.float64)
        if not np.isfinite(features).all():
            raise ValueError(f"path: embedding {model} holds NaN or infinite values")
        if metric == "cosine":
            norms = np.sqrt((features * features).sum(axis=1))
            if norms[anchor] == 0:
                raise ValueError(f"anchor: training point {anchor} has a zero embedding in "
                                 f"model {model}; its cosine similarity is undefined")
            unit = features / np.where(norms > 0, norms, 1.0)[:, None]
            similarity += unit @ unit[anchor]
        else:
            difference = features - features[anchor]
            similarity -= np.sqrt((difference * difference).sum(axis=1))
    similarity /= len(embeddings)
    order = rank_order(similarity)
    others = order[order != anchor]
    if include_anchor:
        chosen = np.concatenate([[anchor], others[: size - 1]])
    else:
        chosen = others[:size]
    return np.sort(chosen).astype(np.int64), similarity


