import copy

import torch
from conftest import max_weight_change, weights_of
from torch.nn import functional as F

from klomflow.unlearning.methods import salun


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_mask_thresholds_all_tensors_together():
    gradients = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([[3.0, -5.0], [4.0, 6.0]])}
    masks = salun.saliency_mask(gradients, 0.5)
    # The 3 largest |gradients| overall all lie in b; a per-tensor threshold would pick -2.0 in a.
    assert masks["a"].tolist() == [False, False]
    assert masks["b"].tolist() == [[False, True], [True, True]]
    assert sum(int(m.sum()) for m in salun.saliency_mask(gradients, 0.34).values()) == 2


def test_forget_gradient_is_the_gradient_of_minus_ce_on_the_forget_set(tiny_problem):
    model, data = tiny_problem
    gradients = salun.forget_gradient(model, data, batch_size=5)
    model.zero_grad()
    (-F.cross_entropy(model(data.forget_x), data.forget_y)).backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(gradients[name], parameter.grad)


def test_masked_step_keeps_weights_outside_the_mask_and_their_momentum_at_zero():
    model = torch.nn.Linear(6, 4)
    originals = {name: p.detach().clone() for name, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    masks = {name: torch.rand(p.shape, generator=generator) < 0.5
             for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(32, 6, generator=generator)
    for _ in range(20):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        salun.masked_step(model, optimizer, masks, originals, weight_decay=0.1)
    for name, parameter in model.named_parameters():
        outside = ~masks[name]
        assert torch.equal(parameter.detach()[outside], originals[name][outside])
        assert (parameter.detach()[masks[name]] != originals[name][masks[name]]).all()
        assert not optimizer.state[parameter]["momentum_buffer"][outside].any()


def test_unlearning_moves_only_salient_weights_under_decay_and_momentum(tiny_problem):
    model, data = tiny_problem
    params = {**salun.METHOD.defaults, "weight_decay": 0.05, "momentum": 0.9, "lr": 0.05,
              "epochs": 3}
    masks = salun.saliency_mask(salun.forget_gradient(copy.deepcopy(model), data, 64),
                                params["mask_ratio"])
    before = weights_of(model)
    model = salun.unlearn(model, data, params)
    after = model.state_dict()
    for name, mask in masks.items():
        assert torch.equal(after[name][~mask], before[name][~mask]), name
        assert (after[name][mask] != before[name][mask]).float().mean() > 0.9, name
    assert sum(int(m.sum()) for m in masks.values()) == int(
        0.5 * sum(m.numel() for m in masks.values()))


def test_plain_sgd_with_decay_would_move_weights_outside_the_mask(tiny_problem):
    """The control for the test above: without masked_step the same run drifts."""
    model, data = tiny_problem
    before = weights_of(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.05)
    model.train()
    masks = salun.saliency_mask(salun.forget_gradient(model, data, 64), 0.5)
    salun.random_label_epoch(model, optimizer, data, {**salun.METHOD.defaults})
    moved = sum(int((model.state_dict()[name][~mask] != before[name][~mask]).sum())
                for name, mask in masks.items())
    assert moved > 0.9 * sum(int((~mask).sum()) for mask in masks.values())


def test_forgets_a_class_and_keeps_the_rest(tiny_class_problem):
    model, data = tiny_class_problem
    before = weights_of(model)
    model = salun.unlearn(model, data, salun.METHOD.defaults)
    assert max_weight_change(before, model) > 1e-3
    assert accuracy(model, data.forget_x, data.forget_y) < 0.2
    assert accuracy(model, data.retain_x, data.retain_y) > 0.9
