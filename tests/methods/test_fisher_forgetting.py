import copy

import torch
from conftest import max_weight_change, weights_of
from torch.nn import functional as F

from klomflow.training.models import build_model
from klomflow.unlearning.methods import fisher_forgetting as ff

PLAIN = {"alpha": 1e-6, "batch_size": 16, "average_over_inputs": False,
         "zero_forget_classes": False}


def reference_fisher(model, x):
    """One point, one class, one backward pass at a time, as in the authors' code."""
    model.eval()
    fisher = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for point in x:
        logits = model(point.unsqueeze(0))
        probabilities = F.softmax(logits, dim=-1).detach()
        for label in range(logits.shape[1]):
            model.zero_grad()
            F.cross_entropy(logits, torch.tensor([label])).backward(retain_graph=True)
            for name, p in model.named_parameters():
                fisher[name] += probabilities[0, label] * p.grad.pow(2)
    return {name: value / len(x) for name, value in fisher.items()}


def test_fisher_is_the_per_point_true_fisher(tiny_problem):
    model, data = tiny_problem
    x = data.retain_x[:30]
    fast = ff.fisher_diagonal(model, x, batch_size=7, device=data.device)
    slow = reference_fisher(copy.deepcopy(model), x)
    for name in slow:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-4, atol=1e-10)


def test_noise_variance_formula_and_clamps():
    fisher = torch.tensor([[1e-9, 1e-2, 1.0], [4.0, 1e-3, 1e-1]])
    alpha = 2e-6
    per_weight = ff.noise_variance(fisher, alpha, is_output_layer=False, average_over_inputs=False)
    expected = alpha * torch.clamp(1 / (fisher + 1e-8), max=1e3)
    torch.testing.assert_close(per_weight, expected)
    assert per_weight[0, 0] == alpha * 1e3  # tiny Fisher: clamped at 1e3
    assert per_weight[1, 0] == alpha / (4.0 + 1e-8)  # large Fisher: alpha / F
    output = ff.noise_variance(fisher, alpha, is_output_layer=True, average_over_inputs=False)
    torch.testing.assert_close(output, alpha * torch.clamp(1 / (fisher + 1e-8), max=1e2))
    averaged = ff.noise_variance(fisher, alpha, is_output_layer=False, average_over_inputs=True)
    torch.testing.assert_close(averaged, expected.mean(dim=1, keepdim=True).expand(2, 3))
    vector = ff.noise_variance(fisher[0], alpha, is_output_layer=False, average_over_inputs=True)
    torch.testing.assert_close(vector, expected[0])  # one axis: nothing to average


def test_every_weight_gets_noise_of_its_own_variance(tiny_problem):
    model, data = tiny_problem
    seed = 123
    fisher = ff.fisher_diagonal(copy.deepcopy(model), data.retain_x, 16, data.device)
    output_layer = ff.output_layer_names(model, data.n_classes)
    assert output_layer == {"layers.3.weight", "layers.3.bias"}
    before = weights_of(model)
    data.generator.manual_seed(seed)
    after = ff.unlearn(model, data, dict(PLAIN)).state_dict()
    draws = torch.Generator().manual_seed(seed)  # the same draws, in parameter order
    for name, weight in before.items():
        variance = PLAIN["alpha"] * torch.clamp(1 / (fisher[name] + 1e-8),
                                                max=1e2 if name in output_layer else 1e3)
        if name in output_layer or weight.dim() == 1:
            variance = variance * 10
        noise = torch.randn(weight.shape, generator=draws)
        torch.testing.assert_close(after[name] - weight, variance.sqrt() * noise,
                                   rtol=1e-4, atol=1e-7)


def test_weights_with_more_fisher_move_less(tiny_problem):
    model, data = tiny_problem
    fisher = ff.fisher_diagonal(copy.deepcopy(model), data.retain_x, 16, data.device)
    name = "layers.1.weight"  # hidden layer: no output clamp, no x10
    below_clamp = fisher[name] > 1e-3  # 1 / F < 1e3: variance alpha / F, not the clamp
    low, high = fisher[name][below_clamp].quantile(torch.tensor([0.25, 0.75]))
    squared_change = torch.zeros_like(fisher[name])
    for seed in range(40):
        copied = copy.deepcopy(model)
        data.generator.manual_seed(seed)
        squared_change += (ff.unlearn(copied, data, dict(PLAIN)).state_dict()[name]
                           - model.state_dict()[name]).pow(2)
    variance = squared_change / 40
    low_fisher = below_clamp & (fisher[name] <= low)
    high_fisher = below_clamp & (fisher[name] >= high)
    assert variance[high_fisher].mean() < 0.5 * variance[low_fisher].mean()
    # Empirical variance x Fisher is about alpha where the clamp is not active.
    ratio = (variance[below_clamp] * fisher[name][below_clamp]).mean() / PLAIN["alpha"]
    assert 0.8 < ratio < 1.2


def test_same_generator_seed_same_result_and_weights_change(tiny_problem):
    model, data = tiny_problem
    before = weights_of(model)
    results = []
    for seed in (5, 5, 6):
        data.generator.manual_seed(seed)
        results.append(weights_of(ff.unlearn(copy.deepcopy(model), data,
                                             dict(ff.METHOD.defaults))))
    assert all(torch.equal(results[0][name], results[1][name]) for name in before)
    assert not all(torch.equal(results[0][name], results[2][name]) for name in before)
    changed = copy.deepcopy(model)
    changed.load_state_dict(results[0])
    assert max_weight_change(before, changed) > 0


def forget_margin(model, data):
    """Mean of z_y - max_{j != y} z_j over the forget set."""
    with torch.no_grad():
        logits = model(data.forget_x)
    true = logits.gather(1, data.forget_y.unsqueeze(1)).squeeze(1)
    others = logits.scatter(1, data.forget_y.unsqueeze(1), float("-inf")).max(1).values
    return float((true - others).mean())


def test_forgotten_class_output_row_is_zeroed(tiny_class_problem):
    model, data = tiny_class_problem
    assert ff.forgotten_classes(data) == [0]
    margin_before = forget_margin(model, data)
    model = ff.unlearn(model, data, dict(ff.METHOD.defaults))
    row = model.state_dict()["layers.3.weight"][0]
    bias = model.state_dict()["layers.3.bias"][0]
    # Mean 0, variance 1e-4 * 10: six standard deviations is about 0.19.
    assert row.abs().max() < 0.2 and bias.abs() < 0.2
    # The class's logit is now ~0: its margin shrinks (on these well-separated blobs the
    # other logits are negative on class-0 points, so it need not flip to an error).
    assert forget_margin(model, data) < 0.5 * margin_before
    with torch.no_grad():
        retain_accuracy = (model(data.retain_x).argmax(1) == data.retain_y).float().mean()
    assert retain_accuracy > 0.9


def test_random_forget_sets_keep_every_output_row(tiny_problem):
    model, data = tiny_problem
    assert ff.forgotten_classes(data) == []


def test_output_layer_is_found_in_resnet9_and_not_guessed_otherwise():
    resnet = build_model({"name": "resnet9"}, (3, 32, 32), 10, init_seed=0)
    names = ff.output_layer_names(resnet, 10)
    assert len(names) == 1 and resnet.state_dict()[next(iter(names))].shape == (10, 128)
    mlp = build_model({"name": "mlp", "hidden": [16]}, (8,), 3, init_seed=0)
    assert ff.output_layer_names(mlp, 4) == set()  # last layer has 3 outputs, not 4
