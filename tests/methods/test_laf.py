"""laf: its losses and one alternating step against a re-statement of the authors' rules
(docs/methods.md; ShaofeiShen768/LAF: Train.py vae_loss_function, VUnlearning.py
extractor_loss_functionnmse / extractor_loss_functioncosine / extractor_unlearning) in
float64, label independence, the head kept and the extractor moved, evaluation mode."""

import copy
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_tiny_problem, max_weight_change, weights_of

from klomflow.config import ConfigError, method_settings, with_defaults
from klomflow.training.models import build_model
from klomflow.unlearning.methods import laf
from klomflow.unlearning.methods.base import UnlearningData

ADAM_EPS = 1e-8


def hand_vae(vae, e, noise):
    """The authors' VAE forward (Model.py) from the module's weights: (reconstruction,
    mean, std)."""
    w = {name: value for name, value in vae.named_parameters()}

    def linear(x, name):
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    hidden = torch.relu(linear(torch.relu(linear(e, "encoder.0")), "encoder.2"))
    mean = linear(hidden, "mean")
    std = torch.exp(0.5 * linear(hidden, "log_variance"))
    z = mean + std * noise
    out = torch.relu(linear(torch.relu(linear(z, "decoder.0")), "decoder.2"))
    return torch.sigmoid(linear(out, "decoder.4")), mean, std


def hand_representation(weight, bias, x):
    """The tiny MLP's hidden layer: the input of its head."""
    return torch.relu(x @ weight.T + bias)


def hand_cosine_distance(a, b):
    return 1 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def hand_unlearning_loss(retain_e, forget_e, remain_vae, forget_vae, retain_noise, forget_noise):
    """Sum over R of exp(m/(m+1)) minus the same over F, m = per-point squared error."""
    total = 0.0
    for e, vae, noise, sign in [
        (retain_e, remain_vae, retain_noise, 1.0),
        (forget_e, forget_vae, forget_noise, -1.0),
    ]:
        reconstruction, _, _ = hand_vae(vae, e, noise)
        for row in range(len(e)):
            m = ((reconstruction[row] - e[row]) ** 2).sum()
            total = total + sign * torch.exp(m / (m + 1))
    return total


def hand_alignment_loss(retain_e, retain_teacher, forget_e, forget_teacher, temperature):
    """The authors' literal sum_i log(exp(d_r,i) / sum_j exp(d_f,j / temperature))."""
    retain_distance = hand_cosine_distance(retain_e, retain_teacher)
    forget_distance = hand_cosine_distance(forget_e, forget_teacher)
    return torch.log(
        torch.exp(retain_distance) / torch.exp(forget_distance / temperature).sum()
    ).sum()


def first_adam_step(value, gradient, lr):
    """Adam's first step from zero moments: value - lr * g / (|g| + eps)."""
    return value - lr * gradient / (gradient.abs() + ADAM_EPS)


def float64_problem():
    model, data = make_tiny_problem()
    model.double().eval()
    data.train_x = data.train_x.double()
    return model, data


def frozen_vae(width, latent, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = laf.RepresentationVae(width, latent).double()
    return vae.eval().requires_grad_(False)


def test_vae_loss_is_summed_squared_error_plus_weighted_kl_per_point_averaged():
    generator = torch.Generator().manual_seed(0)
    e, reconstruction = torch.rand(2, 5, 7, generator=generator, dtype=torch.float64)
    mean = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    std = torch.rand(5, 3, generator=generator, dtype=torch.float64) + 0.2
    expected = 0.0
    for row in range(5):
        squared = sum((reconstruction[row, j] - e[row, j]) ** 2 for j in range(7))
        kl = sum(
            -0.5 * (math.log(std[row, k] ** 2 + 1e-8) + 1 - mean[row, k] ** 2 - std[row, k] ** 2)
            for k in range(3)
        )
        expected += (squared + 0.3 * kl) / 5
    assert float(laf.vae_loss(reconstruction, e, mean, std, 0.3)) == pytest.approx(
        float(expected), rel=1e-12
    )


def test_the_vae_is_the_authors_architecture_with_noise_from_the_generator():
    vae = frozen_vae(6, 4, seed=3)
    widths = [
        (m.in_features, m.out_features) for m in vae.modules() if isinstance(m, torch.nn.Linear)
    ]
    assert widths == [(6, 128), (128, 32), (32, 4), (32, 4), (4, 32), (32, 128), (128, 6)]
    e = torch.rand(5, 6, dtype=torch.float64)
    noise = torch.randn(5, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    got = vae(e, torch.Generator().manual_seed(9))
    for value, expected in zip(got, hand_vae(vae, e, noise)):
        torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    assert 0 < float(got[0].min()) and float(got[0].max()) < 1  # the sigmoid output


def test_the_two_losses_are_the_authors():
    generator = torch.Generator().manual_seed(1)
    retain_errors, forget_errors = torch.rand(2, 6, generator=generator, dtype=torch.float64) * 40
    expected = sum(math.exp(m / (m + 1)) for m in retain_errors.tolist()) - sum(
        math.exp(m / (m + 1)) for m in forget_errors.tolist()
    )
    assert float(laf.extractor_unlearning_loss(retain_errors, forget_errors)) == pytest.approx(
        expected, rel=1e-12
    )
    a, b = torch.randn(2, 5, 4, generator=generator, dtype=torch.float64)
    c, d = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
    for temperature in (1.0, 5.0):
        assert float(laf.alignment_loss(a, b, c, d, temperature)) == pytest.approx(
            float(hand_alignment_loss(a, b, c, d, temperature)), rel=1e-12
        )


def test_one_step_is_the_authors_alternating_update_and_keeps_the_head():
    """L_UE on the current weights, one Adam step at lr_ue; then L_RA with the updated
    weights against the original, one step of a second Adam at lr_ra; the head untouched."""
    model, data = float64_problem()
    retain_x, forget_x = data.retain_x[:9], data.forget_x[:5]
    remain_vae, forget_vae = frozen_vae(16, 3, seed=1), frozen_vae(16, 3, seed=2)
    lr_ue, lr_ra, temperature = 3e-3, 7e-3, 5.0
    before = weights_of(model)
    w, b = before["layers.1.weight"].clone(), before["layers.1.bias"].clone()

    # The re-statement, with the noise drawn as the method draws it: R's, then F's.
    noise_source = torch.Generator().manual_seed(4)
    retain_noise = torch.randn(9, 3, generator=noise_source, dtype=torch.float64)
    forget_noise = torch.randn(5, 3, generator=noise_source, dtype=torch.float64)
    w.requires_grad_(True)
    b.requires_grad_(True)
    unlearning = hand_unlearning_loss(
        hand_representation(w, b, retain_x),
        hand_representation(w, b, forget_x),
        remain_vae,
        forget_vae,
        retain_noise,
        forget_noise,
    )
    grad_w, grad_b = torch.autograd.grad(unlearning, (w, b))
    w1 = first_adam_step(w.detach(), grad_w, lr_ue).requires_grad_(True)
    b1 = first_adam_step(b.detach(), grad_b, lr_ue).requires_grad_(True)
    w0, b0 = before["layers.1.weight"], before["layers.1.bias"]
    alignment = hand_alignment_loss(
        hand_representation(w1, b1, retain_x),
        hand_representation(w0, b0, retain_x),
        hand_representation(w1, b1, forget_x),
        hand_representation(w0, b0, forget_x),
        temperature,
    )
    grad_w, grad_b = torch.autograd.grad(alignment, (w1, b1))
    expected_w = first_adam_step(w1.detach(), grad_w, lr_ra)
    expected_b = first_adam_step(b1.detach(), grad_b, lr_ra)

    teacher = copy.deepcopy(model).requires_grad_(False)
    optimizers = (
        torch.optim.Adam(model.parameters(), lr=lr_ue),
        torch.optim.Adam(model.parameters(), lr=lr_ra),
    )
    got_unlearning, got_alignment, retain_errors, _ = laf.laf_step(
        model,
        teacher,
        remain_vae,
        forget_vae,
        retain_x,
        forget_x,
        optimizers,
        temperature,
        torch.Generator().manual_seed(4),
    )

    assert got_unlearning == pytest.approx(float(unlearning.detach()), rel=1e-10)
    assert got_alignment == pytest.approx(float(alignment.detach()), rel=1e-10)
    assert float(retain_errors.median()) > 1  # m well above 1, where exp(m/(m+1)) flattens
    after = model.state_dict()
    torch.testing.assert_close(after["layers.1.weight"], expected_w, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(after["layers.1.bias"], expected_b, rtol=1e-9, atol=1e-12)
    assert not torch.equal(after["layers.1.weight"], before["layers.1.weight"])
    for name in ("layers.3.weight", "layers.3.bias"):  # the head
        assert torch.equal(after[name], before[name])


def test_an_epoch_zips_shuffled_forget_and_retain_batches_and_stops_at_the_forget_set():
    _, data = make_tiny_problem()
    pairs = laf.zipped_batches(data, batch_size=5)  # 12 forget points: 3 steps
    assert len(pairs) == 3
    forget_seen = torch.cat([forget for forget, _ in pairs])
    assert sorted(forget_seen.tolist()) == sorted(data.forget_indices.tolist())
    assert [len(retain) for _, retain in pairs] == [5, 5, 5]
    retain_seen = torch.cat([retain for _, retain in pairs]).tolist()
    assert len(set(retain_seen)) == 15 and set(retain_seen) <= set(data.retain_indices.tolist())


@pytest.mark.parametrize("remain_vae_data, rows", [("train", 120), ("retain", 108)])
def test_the_remaining_vae_learns_the_chosen_data_and_the_forget_vae_the_forget_set(
    monkeypatch, remain_vae_data, rows
):
    model, data = make_tiny_problem()
    fitted = []
    original_train_vae = laf.train_vae

    def recording(e, params, generator):
        fitted.append(e.clone())
        return original_train_vae(e, params, generator)

    monkeypatch.setattr(laf, "train_vae", recording)
    expected_forget = laf.representations(copy.deepcopy(model).eval(), data.forget_x).detach()
    params = {
        **laf.METHOD.defaults,
        "epochs": 1,
        "vae_epochs": 1,
        "remain_vae_data": remain_vae_data,
    }
    laf.unlearn(model, data, params)
    assert [len(e) for e in fitted] == [rows, 12]  # h_r first, then h_f
    torch.testing.assert_close(fitted[1], expected_forget)


def test_steps_per_epoch_follow_the_forget_set(monkeypatch):
    model, data = make_tiny_problem()
    calls = []
    original_step = laf.laf_step

    def counting(*args, **kwargs):
        calls.append(len(args[5]))  # the forget batch
        return original_step(*args, **kwargs)

    monkeypatch.setattr(laf, "laf_step", counting)
    laf.unlearn(model, data, {**laf.METHOD.defaults, "epochs": 3, "vae_epochs": 1, "batch_size": 8})
    assert calls == [8, 4] * 3


def test_permuting_the_labels_leaves_the_result_bit_identical():
    params = {**laf.METHOD.defaults, "epochs": 5, "vae_epochs": 2, "lr_ue": 1e-3, "lr_ra": 1e-3}
    results = []
    for permute in (False, True):
        model, data = make_tiny_problem()
        original = weights_of(model)
        if permute:
            # Labels permuted over the forget and retain points; the inputs stay.
            data.train_y = data.train_y[
                torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(7))
            ]
        results.append(weights_of(laf.unlearn(model, data, params)))
    assert not torch.equal(results[0]["layers.1.weight"], original["layers.1.weight"])
    for name in results[0]:
        assert torch.equal(results[0][name], results[1][name]), name


def test_the_repair_reads_the_labels_and_moves_only_the_head():
    params = {
        **laf.METHOD.defaults,
        "epochs": 2,
        "vae_epochs": 1,
        "repair": True,
        "repair_epochs": 3,
        "repair_lr": 1e-2,
    }
    heads, trunks = [], []
    for permute in (False, True):
        model, data = make_tiny_problem()
        if permute:
            data.train_y = (data.train_y + 1) % data.n_classes
        without = weights_of(laf.unlearn(copy.deepcopy(model), data, {**params, "repair": False}))
        model, data = make_tiny_problem()
        if permute:
            data.train_y = (data.train_y + 1) % data.n_classes
        with_repair = weights_of(laf.unlearn(model, data, params))
        assert torch.equal(with_repair["layers.1.weight"], without["layers.1.weight"])
        assert not torch.equal(with_repair["layers.3.weight"], without["layers.3.weight"])
        heads.append(with_repair["layers.3.weight"])
        trunks.append(with_repair["layers.1.weight"])
    assert torch.equal(*trunks) and not torch.equal(*heads)


def test_unlearning_moves_the_extractor_and_never_the_head(tiny_problem):
    model, data = tiny_problem
    before = weights_of(model)
    after = laf.unlearn(model, data, {**laf.METHOD.defaults, "epochs": 5, "vae_epochs": 2})
    assert (
        max_weight_change({k: v for k, v in before.items() if k.startswith("layers.1")}, after) > 0
    )
    for name in ("layers.3.weight", "layers.3.bias"):
        assert torch.equal(after.state_dict()[name], before[name])


def test_resnet9_runs_in_evaluation_mode_on_its_pooled_features():
    """BatchNorm keeps its running statistics; the 128 pooled features feed the VAEs; the
    bias-free head stays."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 12, 12, generator=generator)
    model = build_model({"name": "resnet9"}, (1, 12, 12), 3, init_seed=0)
    with torch.no_grad():  # statistics that training mode would overwrite
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1, generator=generator)
    data = UnlearningData(
        train_x=x,
        train_y=torch.zeros(40, dtype=torch.long),
        forget_indices=torch.arange(6),
        retain_indices=torch.arange(6, 40),
        n_classes=3,
        generator=torch.Generator().manual_seed(1),
        device=torch.device("cpu"),
        log=lambda message: None,
    )
    assert laf.representations(model, x[:2]).shape == (2, 128)
    before = weights_of(model)
    model = laf.unlearn(
        model,
        data,
        {**laf.METHOD.defaults, "epochs": 2, "vae_epochs": 1, "lr_ue": 1e-3, "lr_ra": 1e-3},
    )
    after = model.state_dict()
    assert not model.training
    buffers = [name for name in before if "running" in name or "num_batches" in name]
    assert buffers and all(torch.equal(after[name], before[name]) for name in buffers)
    head = [name for name in before if name.startswith("9.")]
    assert head == ["9.weight"] and torch.equal(after["9.weight"], before["9.weight"])
    assert not torch.equal(after["0.0.weight"], before["0.0.weight"])


def test_two_adams_over_every_parameter_and_a_frozen_copy_of_the_original(monkeypatch):
    model, data = make_tiny_problem()
    original = weights_of(model)
    seen = []
    original_step = laf.laf_step

    def recording(model, teacher, remain_vae, forget_vae, retain_x, forget_x, optimizers, *args):
        seen.append((teacher, weights_of(teacher), optimizers))
        return original_step(
            model, teacher, remain_vae, forget_vae, retain_x, forget_x, optimizers, *args
        )

    monkeypatch.setattr(laf, "laf_step", recording)
    params = {**laf.METHOD.defaults, "epochs": 2, "vae_epochs": 1, "lr_ue": 2e-3, "lr_ra": 3e-3}
    model = laf.unlearn(model, data, params)
    teacher, teacher_weights, (unlearning, alignment) = seen[-1]
    assert teacher is not model and not teacher.training
    assert all(torch.equal(teacher_weights[name], value) for name, value in original.items())
    assert unlearning is not alignment
    for optimizer, lr in [(unlearning, 2e-3), (alignment, 3e-3)]:
        assert isinstance(optimizer, torch.optim.Adam)
        assert [group["lr"] for group in optimizer.param_groups] == [lr]
        held = [p for group in optimizer.param_groups for p in group["params"]]
        assert len(held) == len(list(model.parameters()))
        assert all(a is b for a, b in zip(held, model.parameters()))


def test_the_default_config_runs_laf_on_the_random_set_and_refuses_unknown_options():
    config = yaml.safe_load((Path(__file__).parents[2] / "config.yaml").read_text())
    settings = [s for s in method_settings(with_defaults(config)) if s.implementation == "laf"]
    assert [s.params["remain_vae_data"] for s in settings] == ["train"]
    assert config["methods"]["laf"]["forget_sets"] == ["random_60"]
    bad = copy.deepcopy(config)
    bad["methods"]["laf"] = {"remain_vae_data": "forget"}
    with pytest.raises(ConfigError, match=r"methods.laf.remain_vae_data: expected one of"):
        method_settings(with_defaults(bad))
    bad["methods"]["laf"] = {"vae_epoch": 3}
    with pytest.raises(ConfigError, match=r"vae_epoch"):
        method_settings(with_defaults(bad))
