import copy

import torch
from conftest import max_weight_change, weights_of
from torch.nn import functional as F

from klomflow.methods import unsir


def test_noise_raises_the_original_models_loss_on_the_forget_label(tiny_class_problem):
    model, data = tiny_class_problem
    before = weights_of(model)
    params = dict(unsir.METHOD.defaults)
    shape = tuple(data.train_x.shape[1:])
    start = torch.randn((params["noise_size"], *shape), generator=torch.Generator().manual_seed(7))
    noise = unsir.error_maximising_noise(model, 0, shape, params,
                                         torch.Generator().manual_seed(7), data.device)
    assert noise.shape == start.shape
    labels = torch.zeros(params["noise_size"], dtype=torch.long)
    with torch.no_grad():
        loss_start = F.cross_entropy(model(start), labels)
        loss_noise = F.cross_entropy(model(noise), labels)
        objective_start = unsir.noise_loss(model, start, labels, params["noise_l2"], data.device)
        objective_noise = unsir.noise_loss(model, noise, labels, params["noise_l2"], data.device)
    assert loss_noise > loss_start + 1.0
    assert objective_noise < objective_start  # the regularised objective went down
    # The noise is pulled in by the L2 term: it does not blow up.
    assert noise.pow(2).sum(1).mean() < 10 * start.pow(2).sum(1).mean()
    # Optimising the noise leaves the model untouched.
    assert max_weight_change(before, model) == 0.0


def test_the_l2_weight_shrinks_the_noise(tiny_class_problem):
    model, data = tiny_class_problem
    shape = tuple(data.train_x.shape[1:])
    norms = []
    for weight in (0.0, 1.0):
        params = {**unsir.METHOD.defaults, "noise_l2": weight}
        noise = unsir.error_maximising_noise(model, 0, shape, params,
                                             torch.Generator().manual_seed(7), data.device)
        norms.append(float(noise.pow(2).sum(1).mean()))
    assert norms[1] < norms[0]


def test_impair_and_repair_forget_the_class_without_reading_forget_images(tiny_class_problem):
    model, data = tiny_class_problem
    before = weights_of(model)
    seeing = copy.copy(data)
    seeing.generator = torch.Generator().manual_seed(3)
    reference = unsir.unlearn(copy.deepcopy(model), seeing, dict(unsir.METHOD.defaults))
    # The forget images are never read: replace them by NaN; same generator seed.
    blinded = copy.copy(data)
    blinded.generator = torch.Generator().manual_seed(3)
    blinded.train_x = data.train_x.clone()
    blinded.train_x[data.forget_indices] = float("nan")
    model = unsir.unlearn(model, blinded, dict(unsir.METHOD.defaults))
    after = model.state_dict()
    assert all(torch.isfinite(value).all() for value in after.values())
    assert all(torch.equal(after[name], value) for name, value in reference.state_dict().items())
    assert max_weight_change(before, model) > 0
    model.eval()
    with torch.no_grad():
        forget = (model(data.forget_x).argmax(1) == data.forget_y).float().mean()
        retain = (model(data.retain_x).argmax(1) == data.retain_y).float().mean()
    assert forget < 0.5
    assert retain > 0.9


def test_without_noise_the_same_training_keeps_the_class(tiny_class_problem):
    """The impair step's noise, not the retain-set training, does the forgetting."""
    model, data = tiny_class_problem
    model = unsir.unlearn(model, data, {**unsir.METHOD.defaults, "noise_copies": 0})
    with torch.no_grad():
        forget = (model(data.forget_x).argmax(1) == data.forget_y).float().mean()
    assert forget > 0.9
