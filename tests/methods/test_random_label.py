import torch
from conftest import max_weight_change, record_cross_entropy, weights_of

from klomflow.unlearning.methods import base, random_label


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_amnesiac_labels_are_never_the_true_label_and_cover_the_others():
    true = torch.arange(3000) % 5
    labels = base.random_labels(true, 5, torch.Generator().manual_seed(0), amnesiac=True)
    assert not (labels == true).any()
    for label in range(5):
        assert set(labels[true == label].tolist()) == set(range(5)) - {label}


def test_plain_random_labels_include_the_true_label():
    true = torch.arange(3000) % 5
    labels = base.random_labels(true, 5, torch.Generator().manual_seed(0), amnesiac=False)
    assert (labels == true).any()
    assert set(labels.tolist()) == set(range(5))


def test_each_epoch_trains_on_relabelled_forget_points_then_on_the_retain_set(tiny_problem,
                                                                              monkeypatch):
    model, data = tiny_problem
    # Both passes (base.random_label_epoch) go through base.cross_entropy.
    calls = record_cross_entropy(monkeypatch, base)
    params = {**random_label.METHOD.defaults, "epochs": 2, "batch_size": 16,
              "forget_batch_size": 5}
    random_label.unlearn(model, data, params)
    is_forget = torch.zeros(len(data.train_y), dtype=torch.bool)
    is_forget[data.forget_indices] = True
    phases = []
    for x, y in calls:
        # Recover each row's training index from its inputs.
        index = (x[:, None, :] == data.train_x[None]).all(-1).float().argmax(1)
        if is_forget[index].all():
            assert not (y == data.train_y[index]).any()  # amnesiac random labels
            phases.append("forget")
        else:
            assert not is_forget[index].any()
            assert torch.equal(y, data.train_y[index])
            phases.append("retain")
    per_epoch = ["forget"] * 3 + ["retain"] * 7  # 12 forget points in 5s, 108 retain in 16s
    assert phases == per_epoch * 2


def test_forgets_a_class_and_keeps_the_rest(tiny_class_problem):
    model, data = tiny_class_problem
    before = weights_of(model)
    assert accuracy(model, data.forget_x, data.forget_y) == 1.0
    model = random_label.unlearn(model, data, random_label.METHOD.defaults)
    assert max_weight_change(before, model) > 1e-3
    assert accuracy(model, data.forget_x, data.forget_y) < 0.2
    assert accuracy(model, data.retain_x, data.retain_y) > 0.9
