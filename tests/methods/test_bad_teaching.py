import torch
from conftest import max_weight_change, weights_of
from torch import nn
from torch.nn import functional as F

from klomflow.unlearning.methods import bad_teaching


def kl_to(student, target_model, x):
    """Mean KL(target_model's softmax || student's softmax) over x."""
    student.eval()
    with torch.no_grad():
        return float(F.kl_div(F.log_softmax(student(x), 1), F.log_softmax(target_model(x), 1),
                              reduction="batchmean", log_target=True))


def same_weights(a, b):
    return all(torch.equal(value, b[name]) for name, value in a.items())


def test_incompetent_teacher_is_a_fresh_seeded_model_of_the_same_architecture():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].running_mean.fill_(5.0)
    global_state = torch.get_rng_state()
    first = bad_teaching.incompetent_teacher(model, torch.Generator().manual_seed(1))
    again = bad_teaching.incompetent_teacher(model, torch.Generator().manual_seed(1))
    other = bad_teaching.incompetent_teacher(model, torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), global_state)
    assert same_weights(first.state_dict(), again.state_dict())
    assert not torch.equal(first[0].weight, other[0].weight)
    assert not torch.equal(first[0].weight, model[0].weight)
    assert not torch.equal(first[3].weight, model[3].weight)
    assert torch.equal(first[1].running_mean, torch.zeros(4))  # BatchNorm statistics reset too
    assert not first.training and not any(p.requires_grad for p in first.parameters())
    assert model[1].running_mean[0] == 5.0  # the model itself is untouched


def test_targets_come_from_the_incompetent_teacher_on_forget_points_only():
    competent, incompetent = nn.Linear(4, 3), nn.Linear(4, 3)
    x = torch.randn(6, 4)
    is_forget = torch.tensor([True, False, True, False, False, True])
    targets = bad_teaching.teacher_targets(x, is_forget, competent, incompetent, 1.0,
                                           torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(targets[is_forget], F.softmax(incompetent(x[is_forget]), 1))
        torch.testing.assert_close(targets[~is_forget], F.softmax(competent(x[~is_forget]), 1))


def test_student_moves_towards_the_incompetent_teacher_on_forget_points(tiny_class_problem):
    model, data = tiny_class_problem
    competent = bad_teaching.competent_teacher(model)
    incompetent = bad_teaching.incompetent_teacher(model, data.generator)
    competent_before, incompetent_before = weights_of(competent), weights_of(incompetent)
    student_before = weights_of(model)
    start = kl_to(model, incompetent, data.forget_x)
    # The tiny problem has one batch per epoch and far more confident outputs
    # than digits: give it more steps at a higher rate.
    params = {**bad_teaching.METHOD.defaults, "epochs": 20, "lr": 0.01}
    student = bad_teaching.bad_teaching(model, competent, incompetent, data, params)
    assert kl_to(student, incompetent, data.forget_x) < 0.25 * start
    # On retain points it stays close to the original model.
    assert kl_to(student, competent, data.retain_x) < 0.01 * start
    assert same_weights(competent.state_dict(), competent_before)
    assert same_weights(incompetent.state_dict(), incompetent_before)
    assert max_weight_change(student_before, student) > 1e-3


def test_unlearn_uses_a_retain_fraction_and_changes_the_weights(tiny_problem, monkeypatch):
    model, data = tiny_problem
    seen = []
    original_targets = bad_teaching.teacher_targets

    def recording(x, is_forget, *args):
        seen.append((len(x), int(is_forget.sum())))
        return original_targets(x, is_forget, *args)

    monkeypatch.setattr(bad_teaching, "teacher_targets", recording)
    before = weights_of(model)
    params = {**bad_teaching.METHOD.defaults, "epochs": 1, "retain_fraction": 0.5}
    model = bad_teaching.unlearn(model, data, params)
    assert sum(n for n, _ in seen) == len(data.forget_indices) + round(
        0.5 * len(data.retain_indices))
    assert sum(f for _, f in seen) == len(data.forget_indices)
    assert max_weight_change(before, model) > 0
