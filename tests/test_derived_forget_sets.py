"""The derived forget-set algorithms against FORGET-SETS.md (section 7 items 1, 3, 4 and 6)."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from workflow import tiny_config

from klomflow.config import validate
from klomflow.forget_sets import bilevel, principal_components, proxies
from klomflow.forget_sets.bilevel import bilevel_worst_case, project_capped_simplex
from klomflow.forget_sets.neighbours import nearest_neighbors, training_rows
from klomflow.forget_sets.principal_components import pc_scores, select_by_side
from klomflow.forget_sets.proxies import datamodel_group, inout_klom_scores, self_influence_scores
from klomflow.forget_sets.ranking import rank_order
from klomflow.forget_sets.subpopulation import subpopulation
from klomflow.io import save_torch
from klomflow.jobs.forget_sets import Job, _last_linear_inputs, derive, penultimate_features
from klomflow.jobs.runs import dataset_for
from klomflow.metrics.klom import klom_one_point_reference
from klomflow.options import KlomOptions
from klomflow.training.models import build_model

FIRST_BLOCK = np.arange(30, 50)  # loads on component 1
SECOND_BLOCK = np.arange(120, 140)  # loads on component 2


def planted_theta(n=200, noise=0.05, seed=0):
    """Θ whose target rows A = Θᵀ are rank 2 (two planted blocks) plus noise."""
    rng = np.random.default_rng(seed)
    direction_1 = rng.standard_normal(n)
    direction_2 = rng.standard_normal(n)
    direction_2 -= direction_2 @ direction_1 / (direction_1 @ direction_1) * direction_1
    rows = (10 * np.outer(np.isin(np.arange(n), FIRST_BLOCK), direction_1 / np.linalg.norm(
        direction_1)) + 5 * np.outer(np.isin(np.arange(n), SECOND_BLOCK),
                                     direction_2 / np.linalg.norm(direction_2)))
    rows += noise * rng.standard_normal((n, n)) / np.sqrt(n)
    return np.ascontiguousarray(rows.T, dtype=np.float32)


def low_rank_theta(n=120, seed=1):
    """Nearly rank 2 in every preparation (row scaling, centring and a zero diagonal keep
    the spectrum's gap), so the randomized solver must agree with the exact one."""
    rng = np.random.default_rng(seed)
    left = rng.standard_normal((n, 2)) + [1.0, -0.5]
    right = rng.standard_normal((n, 2))
    theta = left @ np.diag([3.0, 1.0]) @ right.T + 1e-4 * rng.standard_normal((n, n))
    return theta.astype(np.float32)


def top(theta, size, component=1, **options):
    return select_by_side(pc_scores(theta, component=component, **options)["scores"], size,
                          "top")[0]


def jaccard(a, b):
    return len(np.intersect1d(a, b)) / len(np.union1d(a, b))


# ---------------------------------------------------------------------------
# datamodel_pc


def test_rank_order_ties_go_to_the_smaller_index():
    assert rank_order([1.0, 3.0, 3.0, -2.0, 1.0]).tolist() == [1, 2, 0, 4, 3]


def test_planted_blocks_are_the_top_of_their_components():
    theta = planted_theta()
    result = pc_scores(theta, component=1)
    assert result["solver"] == "exact"
    assert top(theta, 20, component=1).tolist() == FIRST_BLOCK.tolist()
    assert top(theta, 20, component=2).tolist() == SECOND_BLOCK.tolist()
    assert result["singular_values"].shape == (2,)
    assert result["skewness"] > 0


def test_negated_theta_gives_the_same_set():
    theta = planted_theta()
    for component in (1, 2):
        scores = pc_scores(theta, component=component)["scores"]
        negated = pc_scores(-theta, component=component)["scores"]
        np.testing.assert_allclose(negated, scores, atol=1e-9 * np.abs(scores).max())
        assert np.array_equal(select_by_side(negated, 50, "top")[0],
                              select_by_side(scores, 50, "top")[0])


def test_sets_of_one_component_are_nested_and_both_halves_disjoint():
    scores = pc_scores(planted_theta(), component=1)["scores"]
    top_10, cut_10 = select_by_side(scores, 10, "top")
    top_100, _ = select_by_side(scores, 100, "top")
    assert np.isin(top_10, top_100).all()
    assert cut_10 == np.sort(scores)[::-1][10]
    both, (top_cut, bottom_cut) = select_by_side(scores, 40, "both")
    high, _ = select_by_side(scores, 20, "top")
    low, _ = select_by_side(scores, 20, "bottom")
    assert np.intersect1d(high, low).size == 0
    assert both.tolist() == np.union1d(high, low).tolist()
    assert high.tolist() == FIRST_BLOCK.tolist()
    assert top_cut == np.sort(scores)[::-1][20] and bottom_cut == np.sort(scores)[20]
    # Tied scores: the two ends start at the same points, the halves must still differ.
    tied, _ = select_by_side(np.zeros(10), 4, "both")
    assert tied.tolist() == [0, 1, 2, 3]
    every, cut = select_by_side(scores, scores.size, "bottom")
    assert every.size == scores.size and cut is None


def test_same_configuration_gives_identical_bytes():
    theta = planted_theta()
    for solver in ("exact", "randomized"):
        first = pc_scores(theta, component=2, solver=solver, seed=3)
        second = pc_scores(theta, component=2, solver=solver, seed=3)
        assert first["scores"].tobytes() == second["scores"].tobytes()
        assert (select_by_side(first["scores"], 40, "both")[0].tobytes()
                == select_by_side(second["scores"], 40, "both")[0].tobytes())


def test_randomized_matches_exact_on_the_planted_matrix():
    theta = planted_theta(n=400, seed=2)
    for component in (1, 2):
        exact = top(theta, 100, component=component, solver="exact")
        randomized = top(theta, 100, component=component, solver="randomized", seed=1)
        assert jaccard(exact, randomized) >= 0.95


@pytest.mark.parametrize("rows", ["target", "source"])
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("normalize, zero_diagonal", [("none", False), ("l2", True),
                                                      ("l2", False), ("none", True)])
def test_randomized_operator_is_the_exact_matrix(monkeypatch, rows, center, normalize,
                                                  zero_diagonal):
    # Blocks of 7 rows (the last one short): the blockwise products, row norms, means and
    # zeroed diagonal must add up to the matrix the exact solver builds.
    monkeypatch.setattr(principal_components, "BLOCK_ELEMENTS", 7 * 120)
    theta = low_rank_theta()
    options = dict(rows=rows, center=center, normalize=normalize, zero_diagonal=zero_diagonal)
    for component in (1, 2):
        exact = pc_scores(theta, component=component, solver="exact", **options)
        randomized = pc_scores(theta, component=component, solver="randomized", **options)
        assert randomized["solver"] == "randomized"
        scale = np.abs(exact["scores"]).max()
        np.testing.assert_allclose(randomized["scores"], exact["scores"], atol=1e-7 * scale)
        # S[k] is returned for the gap beside component k; k + 10 columns estimate it well
        # but, in the noise below a rank-2 matrix, not to the digits of the first k.
        np.testing.assert_allclose(randomized["singular_values"][:component],
                                   exact["singular_values"][:component], rtol=1e-9)
        np.testing.assert_allclose(randomized["singular_values"][component],
                                   exact["singular_values"][component], rtol=1e-2)


def test_randomized_reads_a_memmap_from_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(principal_components, "BLOCK_ELEMENTS", 9 * 150)
    theta = planted_theta(n=150, seed=4)
    np.save(tmp_path / "margin_train.npy", theta)
    on_disk = np.load(tmp_path / "margin_train.npy", mmap_mode="r")  # read-only
    options = dict(component=1, zero_diagonal=True, normalize="l2", solver="randomized")
    from_disk = pc_scores(on_disk, **options)
    in_memory = pc_scores(np.array(on_disk), **options)
    assert from_disk["scores"].tobytes() == in_memory["scores"].tobytes()
    exact = pc_scores(theta, **{**options, "solver": "exact"})
    assert jaccard(select_by_side(from_disk["scores"], 100, "top")[0],
                   select_by_side(exact["scores"], 100, "top")[0]) >= 0.95
    assert np.array_equal(np.load(tmp_path / "margin_train.npy"), theta)


def test_pc_errors_name_their_key():
    theta = planted_theta(n=30)
    scores = pc_scores(theta, component=1)["scores"]
    with pytest.raises(ValueError, match="^size: .*odd"):
        select_by_side(scores, 7, "both")
    with pytest.raises(ValueError, match="^size:"):
        select_by_side(scores, 31, "top")
    with pytest.raises(ValueError, match="^side:"):
        select_by_side(scores, 3, "middle")
    for component in (0, 31):
        with pytest.raises(ValueError, match="^component:"):
            pc_scores(theta, component=component)
    with pytest.raises(ValueError, match="^solver: exact refuses"):
        pc_scores(np.broadcast_to(np.float32(0), (20001, 20001)), component=1, solver="exact")
    with pytest.raises(ValueError, match="^rows:"):
        pc_scores(theta, component=1, rows="both")
    broken = theta.copy()
    broken[3, 4] = np.nan
    for solver in ("exact", "randomized"):
        with pytest.raises(ValueError, match="^theta: .*1 NaN"):
            pc_scores(broken, component=1, solver=solver)
        with pytest.raises(ValueError, match="^normalize: .*training point 2"):
            zero_row = theta.copy()
            zero_row[:, 2] = 0  # target row 2 = column 2 of Θ
            pc_scores(zero_row, component=1, normalize="l2", solver=solver)


def test_close_singular_values_are_warned_about():
    result = pc_scores(np.eye(20, dtype=np.float32) * 2, component=2, center=False)
    assert len(result["warnings"]) == 2 and "ill-defined" in result["warnings"][0]
    assert result["relative_gaps"].tolist() == [0.0, 0.0]
    assert not pc_scores(planted_theta(), component=1)["warnings"]


def uneven_theta(n=60, seed=6):
    """Θ with a large diagonal and targets of very different scales: zeroing the diagonal
    and scaling rows to unit length each change the components, and their order
    matters. Three planted directions keep components 1-3 well apart."""
    rng = np.random.default_rng(seed)
    loadings = rng.standard_normal((n, 3)) * [6.0, 3.0, 1.5] + [1.0, 0.0, -0.5]
    theta = loadings @ rng.standard_normal((3, n)) + 0.05 * rng.standard_normal((n, n))
    theta *= rng.uniform(0.2, 5.0, n)  # column x = target x: its scale
    theta[np.arange(n), np.arange(n)] += rng.uniform(5.0, 20.0, n)
    return theta.astype(np.float32)


@pytest.mark.parametrize("rows", ["target", "source"])
def test_exact_pc_scores_are_an_independent_pca_of_the_prepared_matrix(rows):
    # FORGET-SETS.md section 3, steps 1-5, restated: rows of A = Θᵀ (target) or Θ
    # (source), the diagonal zeroed, then each row scaled to unit length, then
    # scikit-learn's PCA (which centres the columns); the score of a point is its
    # coordinate on component k, signed so that the longer tail is positive.
    from sklearn.decomposition import PCA

    theta = uneven_theta()
    matrix = np.array(theta.T if rows == "target" else theta, dtype=np.float64)
    np.fill_diagonal(matrix, 0.0)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    coordinates = PCA(n_components=3, svd_solver="full").fit_transform(matrix)
    for component in (1, 2, 3):
        expected = coordinates[:, component - 1]
        expected = expected if np.sum(expected ** 3) > 0 else -expected
        result = pc_scores(theta, component=component, rows=rows, normalize="l2",
                           zero_diagonal=True, solver="exact")
        assert result["solver"] == "exact"
        np.testing.assert_allclose(result["scores"], expected,
                                   atol=1e-9 * np.abs(expected).max())
    # The preparation matters on this Θ: without it the first component differs.
    plain = pc_scores(theta, component=1, rows=rows, solver="exact")["scores"]
    first = coordinates[:, 0] if np.sum(coordinates[:, 0] ** 3) > 0 else -coordinates[:, 0]
    assert np.abs(np.corrcoef(plain, first)[0, 1]) < 0.99


# ---------------------------------------------------------------------------
# nearest_neighbors


def three_clusters(n_per_cluster=30, seed=0):
    rng = np.random.default_rng(seed)
    cluster = rng.permutation(np.repeat(np.arange(3), n_per_cluster))
    features = 10 * np.eye(3)[cluster] + rng.standard_normal((cluster.size, 3))
    return features, cluster


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nearest_neighbours_are_the_anchors_cluster(metric):
    features, cluster = three_clusters()
    anchor = int(np.flatnonzero(cluster == 1)[4])
    members = np.flatnonzero(cluster == 1)
    chosen, similarity = nearest_neighbors([features], anchor, 30, metric=metric)
    assert chosen.tolist() == members.tolist() and similarity.shape == (90,)
    excluded, _ = nearest_neighbors(features, anchor, 29, metric=metric, include_anchor=False)
    assert anchor not in excluded
    assert excluded.tolist() == members[members != anchor].tolist()


def test_similarities_are_averaged_over_models_not_features():
    features, cluster = three_clusters()
    # A second "model" with other, unaligned features: rotated into 5 dimensions and
    # negated. Averaged features would cancel; cosine similarities are unchanged.
    rotation = np.linalg.qr(np.random.default_rng(1).standard_normal((5, 3)))[0]
    other = -(features @ rotation.T)
    _, one_model = nearest_neighbors([features], 0, 10)
    chosen, two_models = nearest_neighbors([features, other.astype(np.float32)], 0, 10)
    np.testing.assert_allclose(two_models, one_model, atol=1e-6)  # float32 rounding
    assert np.isin(chosen, np.flatnonzero(cluster == cluster[0])).all()


def test_nearest_neighbour_errors():
    features, _ = three_clusters()
    with pytest.raises(ValueError, match="^path: .*2-D"):
        nearest_neighbors([features[:, 0]], 0, 5)
    with pytest.raises(ValueError, match="^path: embedding 1 has 89 rows"):
        nearest_neighbors([features, features[:-1]], 0, 5)
    with pytest.raises(ValueError, match="^anchor:"):
        nearest_neighbors(features, 90, 5)
    with pytest.raises(ValueError, match="^size:"):
        nearest_neighbors(features, 0, 90, include_anchor=False)
    zero = features.copy()
    zero[7] = 0
    with pytest.raises(ValueError, match="^anchor: training point 7 has a zero embedding"):
        nearest_neighbors(zero, 7, 5)
    assert nearest_neighbors(zero, 0, 5)[1][7] == 0
    assert training_rows(np.zeros((100, 4)), 90, 100).shape == (90, 4)
    with pytest.raises(ValueError, match="^path: embeddings have 95 rows"):
        training_rows(np.zeros((95, 4)), 90, 100)


def brute_force_neighbours(embeddings, anchor, size, metric, include_anchor):
    """Section 4 restated point by point: per model, cosine similarity to the anchor
    (or minus the Euclidean distance), averaged over models; then the anchor (when
    included) and the most similar others, ties to the smaller index."""
    n = len(embeddings[0])
    similarity = []
    for point in range(n):
        per_model = []
        for features in embeddings:
            a, b = [float(v) for v in features[point]], [float(v) for v in features[anchor]]
            if metric == "cosine":
                norm_a = math.sqrt(math.fsum(v * v for v in a))
                norm_b = math.sqrt(math.fsum(v * v for v in b))
                per_model.append(math.fsum(u * v for u, v in zip(a, b)) / (norm_a * norm_b)
                                 if norm_a > 0 else 0.0)
            else:
                per_model.append(-math.sqrt(math.fsum((u - v) ** 2 for u, v in zip(a, b))))
        similarity.append(math.fsum(per_model) / len(embeddings))
    ranked = [j for j in np.argsort([-value for value in similarity], kind="stable")
              if j != anchor]
    chosen = ([anchor] + ranked[: size - 1]) if include_anchor else ranked[:size]
    return sorted(int(j) for j in chosen), np.array(similarity), ranked


def overlapping_clusters(n=120, seed=2):
    """Two models' features of three clusters that overlap: the anchor's neighbours
    are a ranking, not a cluster."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 3, n)
    first = 1.2 * np.eye(4)[cluster] + rng.standard_normal((n, 4)) * 0.8 + 0.3
    second = first @ rng.standard_normal((4, 6)) + 0.6 * rng.standard_normal((n, 6))
    return [first, second.astype(np.float32)], cluster


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("include_anchor", [True, False])
def test_neighbour_ranking_is_a_brute_force_argsort(metric, include_anchor):
    embeddings, cluster = overlapping_clusters()
    anchor, size = 17, 25
    chosen, similarity = nearest_neighbors(embeddings, anchor, size, metric=metric,
                                           include_anchor=include_anchor)
    expected, expected_similarity, ranked = brute_force_neighbours(
        embeddings, anchor, size, metric, include_anchor)
    np.testing.assert_allclose(similarity, expected_similarity, rtol=1e-12, atol=1e-12)
    assert chosen.tolist() == expected
    # The clusters overlap: the set is not the anchor's cluster, and the cut is a clear
    # gap, not a tie decided by rounding.
    assert 0.2 < np.mean(cluster[chosen] == cluster[anchor]) < 1.0
    cut = size - 1 if include_anchor else size
    assert expected_similarity[ranked[cut - 1]] - expected_similarity[ranked[cut]] > 1e-9


def test_tied_neighbours_go_to_the_smaller_index():
    # Whole-number features: many points sit at exactly the same distance from the
    # anchor, and the cut falls inside such a tie.
    rng = np.random.default_rng(4)
    features = rng.integers(-2, 3, (80, 2)).astype(np.float64)
    anchor, size = 5, 20
    chosen, similarity = nearest_neighbors([features], anchor, size, metric="euclidean")
    expected, _, ranked = brute_force_neighbours([features], anchor, size, "euclidean", True)
    assert similarity[ranked[size - 2]] == similarity[ranked[size - 1]]  # a tie at the cut
    assert chosen.tolist() == expected


def test_datamodel_embedding_is_the_targets_datamodel_columns(tmp_path):
    # `embedding: datamodel`: point x is described by Θ[:, x], how every training
    # point moves x's margin (a row of Θᵀ). Columns here cluster and overlap; rows
    # are noise, so describing x by its row Θ[x, :] would give another set.
    embeddings, _ = overlapping_clusters(n=90)
    rng = np.random.default_rng(8)
    theta = (embeddings[0] @ rng.standard_normal((4, 90))).T  # column x from point x
    theta = (theta + 0.3 * rng.standard_normal((90, 90))).astype(np.float32)
    np.save(tmp_path / "margin_train.npy", theta)
    spec = {"kind": "nearest_neighbors", "anchor": 17, "size": 20, "embedding": "datamodel",
            "metric": "cosine", "include_anchor": True}
    job = Job("nn", spec, {"margin_datamodel": str(tmp_path / "margin_train.npy")},
              np.zeros(90, dtype=np.int64), 90, {}, lambda message: None)
    members, record = derive(job)
    expected, similarity, _ = brute_force_neighbours([theta.T], 17, 20, "cosine", True)
    assert members.tolist() == expected
    assert record["scores"] == pytest.approx([similarity[i] for i in expected], abs=1e-9)
    by_rows, _, _ = brute_force_neighbours([theta], 17, 20, "cosine", True)
    assert len(np.intersect1d(by_rows, expected)) < 15


def mlp_by_hand(state, x):
    """Hidden activations of klomflow's MLP written out: ReLU(x W1ᵀ + b1), then the
    next layer, up to (not including) the last linear layer."""
    hidden = x.reshape(len(x), -1).double()
    layers = sorted({int(name.split(".")[1]) for name in state})
    for layer in layers[:-1]:
        weight, bias = state[f"layers.{layer}.weight"], state[f"layers.{layer}.bias"]
        hidden = torch.relu(hidden @ weight.double().T + bias.double())
    head = f"layers.{layers[-1]}"
    return (hidden.numpy(), state[f"{head}.weight"].double().numpy(),
            state[f"{head}.bias"].double().numpy())


def test_penultimate_features_are_the_input_of_the_last_linear_layer(tmp_path):
    config = validate(tiny_config() | {"model": {"name": "mlp", "hidden": [16, 8]}}, tmp_path)
    dataset = dataset_for(config)
    models = {index: build_model(config["model"], dataset.input_shape, dataset.n_classes, index)
              for index in (0, 1, 2)}
    records = {index: {"index": index, "state_dict": model.state_dict()}
               for index, model in models.items()}
    # Shards as the originals' rule writes them, the models out of index order.
    save_torch(tmp_path / "shard_0.pt", {"models": [records[2], records[1]]})
    save_torch(tmp_path / "shard_1.pt", {"models": [records[0]]})
    features = penultimate_features(config, [tmp_path / "shard_0.pt", tmp_path / "shard_1.pt"],
                                    2, ".", lambda message: None)
    assert len(features) == 2
    for index, found in zip((0, 1), features):
        expected, head, bias = mlp_by_hand(models[index].state_dict(), dataset.train_x)
        assert found.shape == (len(dataset.train_y), 8) and found.dtype == np.float64
        np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            logits = models[index](dataset.train_x).double().numpy()
        np.testing.assert_allclose(found @ head.T + bias, logits, rtol=1e-4, atol=1e-4)


def test_resnet9_penultimate_features_are_the_pooled_128_channels():
    model = build_model({"name": "resnet9"}, (3, 16, 16), 10, 0).eval()
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    features = _last_linear_inputs(model, x)
    with torch.no_grad():
        # Layers 0-8 end with the global max pool and Flatten; 9 is the head, 10 the scale.
        pooled = model[:9](x).double().numpy()
        logits = model(x).double().numpy()
    assert features.shape == (6, 128)
    np.testing.assert_allclose(features, pooled, rtol=1e-6, atol=1e-6)
    head = model[9].weight.detach().double().numpy()
    np.testing.assert_allclose(0.2 * features @ head.T, logits, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# subpopulation


def fine_and_coarse(seed=0):
    fine = np.random.default_rng(seed).permutation(np.repeat(np.arange(6), 10))
    return fine, fine // 2


def test_subpopulation_is_one_fine_class():
    fine, coarse = fine_and_coarse()
    everyone = np.flatnonzero(fine == 4)
    assert subpopulation(fine, coarse, 4).tolist() == everyone.tolist()
    first = subpopulation(fine, coarse, 4, size=5)
    assert first.tolist() == everyone[:5].tolist() and first.dtype == np.int64
    sampled = subpopulation(fine, coarse, 4, size=5, select="random", seed=2)
    assert np.isin(sampled, everyone).all() and np.all(np.diff(sampled) > 0)
    assert sampled.tolist() == subpopulation(fine, coarse, 4, size=5, select="random",
                                             seed=2).tolist()


def test_subpopulation_errors():
    fine, coarse = fine_and_coarse()
    mixed = coarse.copy()
    mixed[np.flatnonzero(fine == 4)[3]] = 0
    with pytest.raises(ValueError, match=r"^subclass: fine class 4 spans coarse labels \[0, 2\]"):
        subpopulation(fine, mixed, 4)
    with pytest.raises(ValueError, match="^size: 11 is outside 1..10"):
        subpopulation(fine, coarse, 4, size=11)
    with pytest.raises(ValueError, match="^subclass:"):
        subpopulation(fine, coarse, 6)
    with pytest.raises(ValueError, match="^select:"):
        subpopulation(fine, coarse, 4, select="last")


# ---------------------------------------------------------------------------
# worst_case proxies


def subset_models(n_models=40, n_points=25, seed=0):
    rng = np.random.default_rng(seed)
    masks = rng.random((n_models, n_points)) < 0.5
    masks[0], masks[1] = True, False  # every point on both sides
    effect = rng.uniform(0, 3, n_points)
    margins = rng.standard_normal((n_models, n_points)) + masks * effect
    # Values on a grid, so that samples land on bin edges, and beyond a small clip.
    margins = np.round(margins * 2) / 2
    margins[:, 3] = 1.5  # one point whose margins never move
    return margins, masks


@pytest.mark.parametrize("binning", ["reference", "inclusive"])
@pytest.mark.parametrize("direction", ["unlearned_to_oracle", "oracle_to_unlearned"])
@pytest.mark.parametrize("bins, clip", [(20, 100.0), (7, 1.5)])
def test_inout_klom_is_the_reference_per_point(monkeypatch, binning, direction, bins, clip):
    monkeypatch.setattr(proxies, "KLOM_CHUNK_ELEMENTS", 40 * 6)  # chunks of 6 points
    margins, masks = subset_models()
    # Point 4: samples on the bin edges and one float64 step either side of them, where a
    # bin computed from the width alone can be off by one.
    edges = np.linspace(-1.3, 1.4, bins + 1)
    near = np.concatenate([edges, np.nextafter(edges, -np.inf)[1:], np.nextafter(edges, np.inf)])
    margins[:, 4] = np.resize(near, 40)
    margins[:2, 4] = -1.3, 1.4
    options = KlomOptions(bins=bins, clip=clip, binning=binning, direction=direction)
    scores = inout_klom_scores(margins, masks, options)
    expected = [klom_one_point_reference(margins[masks[:, i], i], margins[~masks[:, i], i],
                                         options) for i in range(margins.shape[1])]
    assert scores.tolist() == expected
    assert scores[3] == 0 and scores.max() > 1


def test_inout_klom_needs_both_sides():
    margins, masks = subset_models()
    masks[:, 5] = True
    with pytest.raises(ValueError, match="^masks: training point 5 is in 40 of 40"):
        inout_klom_scores(margins, masks)


def test_self_influence_is_the_diagonal_over_the_margin_spread():
    margins, _ = subset_models()
    margins[:, 3] += np.arange(40) / 40  # give the constant point a spread
    theta = np.random.default_rng(1).standard_normal((25, 25)).astype(np.float32)
    expected = theta.diagonal().astype(np.float64) / margins.std(axis=0, ddof=1)
    np.testing.assert_allclose(self_influence_scores(theta, margins), expected, rtol=1e-12)
    margins[:, 8] = 2.0
    with pytest.raises(ValueError, match="^subset_margins: training point 8 has margin "
                                         "standard deviation 0"):
        self_influence_scores(theta, margins)


def naive_group(z, size):
    """Add the point that raises sum(Z over F x F) most, by recomputing that sum."""
    chosen = []
    for _ in range(size):
        totals = [z[np.ix_(chosen + [j], chosen + [j])].sum() if j not in chosen else -np.inf
                  for j in range(len(z))]
        chosen.append(int(np.argmax(totals)))
    return chosen


def test_datamodel_group_finds_the_planted_group(tmp_path):
    rng = np.random.default_rng(0)
    n, group = 60, np.array([7, 19, 33, 41, 52])
    theta = 0.01 * rng.standard_normal((n, n))
    np.fill_diagonal(theta, rng.uniform(0, 1.5, n))
    theta[np.ix_(group, group)] = 0.8
    theta[group, group] = 0.3
    theta[19, 19] = 2.0  # the group's way in: one member stands out alone
    theta = theta.astype(np.float32)
    picks, gains = datamodel_group(theta, np.ones(n), 5)
    assert picks[0] == 19 and np.sort(picks).tolist() == group.tolist()
    # After the way in, each member adds its links to the members before it.
    assert gains[1:].tolist() == sorted(gains[1:].tolist()) and gains[1] > 1.5
    # One point at a time misses the group: only its way in has a large diagonal.
    singletons = np.sort(rank_order(theta.diagonal())[:5])
    assert np.intersect1d(singletons, group).tolist() == [19]
    # Θᵀ on disk serves the columns; the result cannot change.
    np.save(tmp_path / "transposed.npy", np.ascontiguousarray(theta.T))
    again, _ = datamodel_group(theta, np.ones(n), 5,
                               theta_transposed=np.load(tmp_path / "transposed.npy",
                                                        mmap_mode="r"))
    assert again.tolist() == picks.tolist()


def test_datamodel_group_is_the_naive_greedy_in_standard_deviations():
    rng = np.random.default_rng(3)
    theta = rng.standard_normal((30, 30)).astype(np.float32)
    sd = rng.uniform(0.5, 2.0, 30)
    z = theta.astype(np.float64) / sd
    picks, gains = datamodel_group(theta, sd, 8)
    assert picks.tolist() == naive_group(z, 8)
    totals = [z[np.ix_(picks[:k], picks[:k])].sum() for k in range(1, 9)]
    np.testing.assert_allclose(np.cumsum(gains), totals, rtol=1e-10)
    with pytest.raises(ValueError, match="^subset_margins: training point 4"):
        datamodel_group(theta, np.where(np.arange(30) == 4, 0.0, sd), 3)


# ---------------------------------------------------------------------------
# worst_case, bilevel


def projection_by_root(values, size):
    shift = brentq(lambda mu: np.clip(values - mu, 0, 1).sum() - size,
                   values.min() - 1, values.max(), xtol=1e-15)
    return np.clip(values - shift, 0, 1)


def test_projection_satisfies_the_constraints():
    values = np.random.default_rng(0).normal(0.3, 1.5, 50)
    projected = project_capped_simplex(values, 7)
    assert projected.min() >= 0 and projected.max() <= 1
    assert abs(projected.sum() - 7) < 1e-9
    assert 0 < np.sum(projected == 1) and 0 < np.sum((projected > 0) & (projected < 1))
    np.testing.assert_allclose(projected, projection_by_root(values, 7), atol=1e-12)
    # The nearest point: no feasible move towards `values` shortens the distance.
    free = (projected > 0) & (projected < 1)
    shift = values[free] - projected[free]
    assert np.ptp(shift) < 1e-12
    assert (values[projected == 1] - 1 >= shift[0] - 1e-12).all()
    assert (values[projected == 0] <= shift[0] + 1e-12).all()
    assert project_capped_simplex(values, 50).tolist() == [1.0] * 50


def linear_toy(seed=5):
    """Six points in 3-D with three labels and the weights of a linear model [3 x 3]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((6, 3))
    y = np.array([0, 1, 2, 0, 1, 2])
    return x, y, rng.standard_normal((3, 3)), rng.standard_normal(3)


def bilevel_by_hand(x, y, weight, bias, current, *, size, inner_lr, w_lr, gamma):
    """One outer step written out: one batch of signSGD on the complement-weighted loss
    from (weight, bias), then the projected step on w."""

    def cross_entropy(weight, bias):
        logits = x @ weight.T + bias
        log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -log_probabilities[np.arange(len(y)), y], np.exp(log_probabilities)

    _, probabilities = cross_entropy(weight, bias)
    residual = (probabilities - np.eye(3)[y]) * (1 - current)[:, None]  # dloss/dlogits
    weight_after = weight - inner_lr * np.sign(residual.T @ x)
    bias_after = bias - inner_lr * np.sign(residual.sum(axis=0))
    losses, _ = cross_entropy(weight_after, bias_after)
    return projection_by_root(current - w_lr * (losses + 2 * gamma * current), size)


def run_on_linear_toy(x, y, weight, bias, **keys):
    model = torch.nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weight))
        model.bias.copy_(torch.tensor(bias))
    chosen, weights, warnings = bilevel_worst_case(
        model, torch.tensor(x, dtype=torch.float32), torch.tensor(y), keys.pop("size"),
        inner_epochs=1, batch_size=6, log=lambda message: None, **keys)
    assert np.array_equal(model.weight.detach().numpy(), weight.astype(np.float32))
    return chosen, weights, warnings


def initial_subset(n, size, seed):
    start = np.zeros(n)
    start[np.random.default_rng(seed).choice(n, size, replace=False)] = 1.0
    return start


@pytest.mark.parametrize("rounding_interval", [20, 2, 1])
def test_two_bilevel_steps_are_the_hand_computed_update(monkeypatch, rounding_interval):
    # The reference rounds w to its top-`size` indicator every `feq_to_bi` outer steps,
    # never after the last: with an interval of 1 the second step starts from the
    # indicator of the first step's set; with 2 (= the steps) nothing is rounded.
    monkeypatch.setattr(bilevel, "ROUNDING_INTERVAL", rounding_interval)
    x, y, weight, bias = linear_toy()
    keys = dict(size=2, inner_lr=0.1, w_lr=0.4, gamma=0.3)
    chosen, weights, warnings = run_on_linear_toy(x, y, weight, bias, outer_steps=2, seed=4,
                                                  **keys)
    first = bilevel_by_hand(x, y, weight, bias, initial_subset(6, 2, 4), **keys)
    assert np.sum((first > 0) & (first < 1)) >= 2  # the projection is not a rounding
    if rounding_interval == 1:
        first = np.isin(np.arange(6), rank_order(first)[:2]).astype(float)
    expected = bilevel_by_hand(x, y, weight, bias, first, **keys)
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    assert chosen.tolist() == np.sort(rank_order(expected)[:2]).tolist()
    assert not np.array_equal(chosen, np.flatnonzero(initial_subset(6, 2, 4)))
    assert warnings == []


def test_the_retrain_lower_level_restarts_from_one_xavier_initialisation():
    # w_retrain (the reference's default lower level): every outer step re-initialises
    # the model, Xavier-uniform weights, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)),
    # and zero biases, the same draw at every step (the reference re-seeds), and then
    # runs the same signSGD steps as fine-tuning. The given weights are never used.
    x, y, pilot_weight, pilot_bias = linear_toy()
    keys = dict(size=2, inner_lr=0.1, w_lr=0.4, gamma=0.3)
    seed = 11
    bound = np.sqrt(6 / (3 + 3))
    drawn = torch.empty(3, 3).uniform_(-bound, bound, generator=torch.Generator().manual_seed(
        seed)).double().numpy()
    chosen, weights, _ = run_on_linear_toy(x, y, pilot_weight, pilot_bias, outer_steps=2,
                                           seed=seed, lower_level="retrain", **keys)
    first = bilevel_by_hand(x, y, drawn, np.zeros(3), initial_subset(6, 2, seed), **keys)
    expected = bilevel_by_hand(x, y, drawn, np.zeros(3), first, **keys)
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    assert chosen.tolist() == np.sort(rank_order(expected)[:2]).tolist()
    from_pilot = bilevel_by_hand(x, y, pilot_weight, pilot_bias, first, **keys)
    assert np.abs(from_pilot - expected).max() > 1e-3  # the pilot's weights would show
    with pytest.raises(ValueError, match="^lower_level: 'w_retrain'"):
        run_on_linear_toy(x, y, pilot_weight, pilot_bias, outer_steps=1, lower_level="w_retrain",
                          **keys)


def test_reinitialisation_draws_linear_and_convolution_weights_and_keeps_batch_norm():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 9, 5))
    with torch.no_grad():
        model[1].weight.fill_(3.0)
        model[1].running_mean.fill_(0.5)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    state = bilevel.reinitialised_state(model, 7)
    assert state.keys() == before.keys()
    for name in ("1.weight", "1.bias", "1.running_mean", "1.running_var"):
        assert torch.equal(state[name], before[name])
    assert not state["0.bias"].any() and not state["3.bias"].any()
    for name, fan_in, fan_out in (("0.weight", 2 * 9, 4 * 9), ("3.weight", 36, 5)):
        bound = np.sqrt(6 / (fan_in + fan_out))
        values = state[name].numpy()
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.8 * bound
        assert not torch.equal(state[name], before[name])
    again = bilevel.reinitialised_state(model, 7)
    assert all(torch.equal(state[name], again[name]) for name in state)
    assert not torch.equal(bilevel.reinitialised_state(model, 8)["3.weight"], state["3.weight"])
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def test_a_set_that_never_left_its_random_start_is_warned_about():
    # A weight moves by w_lr times a loss per step; members start 1 above the rest.
    x, y, weight, bias = linear_toy()
    chosen, _, warnings = run_on_linear_toy(x, y, weight, bias, size=2, outer_steps=3,
                                            inner_lr=0.1, w_lr=1e-3, gamma=0.0, seed=11)
    assert chosen.tolist() == np.flatnonzero(initial_subset(6, 2, 11)).tolist()
    assert len(warnings) == 1 and "still its random initial subset (seed 11)" in warnings[0]


def test_bilevel_on_a_toy_set_is_exact_in_size_and_deterministic(tiny_problem):
    model, data = tiny_problem
    before = {name: value.clone() for name, value in model.state_dict().items()}
    for lower_level in bilevel.LOWER_LEVELS:
        runs = [bilevel_worst_case(model, data.train_x, data.train_y, 12, outer_steps=3,
                                   inner_epochs=2, batch_size=32, seed=4,
                                   lower_level=lower_level, log=lambda message: None)
                for _ in range(2)]
        (chosen, weights, _), (again, weights_again, _) = runs
        assert chosen.dtype == np.int64 and chosen.size == 12 and np.all(np.diff(chosen) > 0)
        assert chosen.tobytes() == again.tobytes()
        assert weights.tobytes() == weights_again.tobytes()
        assert weights.min() >= 0 and weights.max() <= 1 and abs(weights.sum() - 12) < 1e-9
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
