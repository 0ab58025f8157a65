import torch
from conftest import max_weight_change, weights_of
from torch.nn import functional as F

from klomflow.methods import scrub


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def forget_divergence(student, teacher, data, temperature=4.0):
    student.eval()
    with torch.no_grad():
        return float(scrub.distillation_kl(student(data.forget_x), teacher(data.forget_x),
                                           temperature))


def test_distillation_kl_is_the_temperature_scaled_kl_of_teacher_to_student():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 4, generator=generator)
    p_teacher = F.softmax(teacher / 3, dim=1)
    expected = (p_teacher * (p_teacher.log() - F.log_softmax(student / 3, dim=1))).sum(1).mean()
    torch.testing.assert_close(scrub.distillation_kl(student, teacher, 3.0), expected * 9)
    assert float(scrub.distillation_kl(teacher, teacher, 3.0)) == 0.0


def test_the_optimiser_holds_exactly_the_students_parameters(tiny_problem, monkeypatch):
    model, data = tiny_problem
    built = []

    class RecordingSGD(torch.optim.SGD):
        def __init__(self, parameters, *args, **kwargs):
            super().__init__(parameters, *args, **kwargs)
            built.append(self)

    monkeypatch.setattr(torch.optim, "SGD", RecordingSGD)
    before = weights_of(model)
    student = scrub.unlearn(model, data, scrub.METHOD.defaults)
    assert len(built) == 1
    optimised = [p for group in built[0].param_groups for p in group["params"]]
    assert len(optimised) == len(list(student.parameters()))
    assert all(a is b for a, b in zip(optimised, student.parameters()))
    assert max_weight_change(before, student) > 0


def test_student_moves_and_teacher_stays(tiny_class_problem):
    model, data = tiny_class_problem
    teacher = scrub.frozen_copy(model)
    teacher_before = weights_of(teacher)
    student_before = weights_of(model)
    student = scrub.scrub(model, teacher, data, scrub.METHOD.defaults)
    assert all(torch.equal(value, teacher_before[name])
               for name, value in teacher.state_dict().items())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert max_weight_change(student_before, student) > 0


def test_max_steps_push_the_student_away_from_the_teacher_on_the_forget_set(tiny_class_problem):
    model, data = tiny_class_problem
    teacher = scrub.frozen_copy(model)
    # At student == teacher the divergence's gradient is 0; start a little off it.
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator))
    start = forget_divergence(model, teacher, data)
    only_max_steps = {**scrub.METHOD.defaults, "epochs": 3, "msteps": 3, "weight_decay": 0.0,
                      "lr": 0.05}
    data.retain_indices = data.retain_indices[:0]  # no min-step batches
    student = scrub.scrub(model, teacher, data, only_max_steps)
    assert forget_divergence(student, teacher, data) > 2 * start
