"""The CUDA path: bfloat16 mixed-precision training, float32 logits, resuming.

Marked `cuda`: the default run leaves them out (pyproject's addopts), and
`pytest -m cuda` runs them. Asked to run without a GPU they FAIL, naming the
reason; they never skip.
"""

import os

# cuBLAS reads this when its first handle is made: deterministic matrix products,
# so that a resumed run can be compared bit for bit (PyTorch's reproducibility notes).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from workflow import tiny_config  # noqa: E402

from klomflow.config import method_settings, validate  # noqa: E402
from klomflow.io import load_torch, save_torch  # noqa: E402
from klomflow.jobs.runs import train_shard, unlearn_shard  # noqa: E402
from klomflow.training.loop import Recipe, predict_logits, train_model  # noqa: E402
from klomflow.training.models import build_model  # noqa: E402

pytestmark = pytest.mark.cuda

QUIET = {"log": lambda message: None}


def require_cuda() -> torch.device:
    """The GPU, or a failure (in the test itself, not its setup) saying why there is none."""
    assert torch.cuda.is_available(), (
        "the `cuda` tests need a CUDA GPU and torch sees none (torch "
        f"{torch.__version__}, built for CUDA {torch.version.cuda}, "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); run "
        "`pytest -m cuda` on a machine with one")
    return torch.device("cuda")


@pytest.fixture
def deterministic():
    """Deterministic kernels for a bit-for-bit comparison (a kernel without one warns)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)


def blobs(device, n=200, n_features=20, n_classes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    x = torch.randn(n_classes, n_features, generator=generator)[y] * 2 + torch.randn(
        n, n_features, generator=generator)
    return x.to(device), y.to(device)


def mlp(x, seed=0):
    return build_model({"name": "mlp", "hidden": [64]}, tuple(x.shape[1:]), 4, init_seed=seed)


RECIPE = Recipe(epochs=4, batch_size=32, lr=0.1, schedule="triangular", peak_epoch=1)


def test_training_runs_in_bfloat16_with_float32_weights():
    cuda = require_cuda()
    x, y = blobs(cuda)
    model = mlp(x)
    seen = []
    hook = model.layers[-1].register_forward_hook(
        lambda module, inputs, output: seen.append((output.dtype, module.training)))
    train_model(model, x, y, RECIPE, torch.Generator().manual_seed(1), cuda, **QUIET)
    hook.remove()
    training_dtypes = {dtype for dtype, training in seen if training}
    assert training_dtypes == {torch.bfloat16}, f"training ran in {training_dtypes}"
    # Autocast computes in bfloat16; the weights the optimiser updates stay float32.
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert all(p.is_cuda for p in model.parameters())
    logits = predict_logits(model, x, cuda)
    assert (logits.argmax(1) == y.cpu().numpy()).mean() > 0.9  # it learnt


def test_logits_are_float32_not_bfloat16():
    """The same weights on the CPU (float32) give the same logits, to float32 precision;
    bfloat16 would be off by ~1e-2 at these magnitudes."""
    cuda = require_cuda()
    x, y = blobs(cuda)
    model = train_model(mlp(x), x, y, RECIPE, torch.Generator().manual_seed(1), cuda, **QUIET)
    logits = predict_logits(model, x, cuda)
    assert logits.dtype == np.float32
    with torch.no_grad():  # float32 on the CPU, without the code under test
        on_cpu = model.cpu().eval()(x.cpu()).numpy()
    np.testing.assert_allclose(logits, on_cpu, rtol=1e-5, atol=1e-5)
    rounded = torch.as_tensor(on_cpu).bfloat16().float().numpy()
    assert np.abs(rounded - on_cpu).max() > 1e-3  # so the check above could tell them apart


def test_resnet9_trains_on_cuda_and_predicts_float32():
    """The paper's model under autocast (convolutions and BatchNorm in mixed precision)."""
    cuda = require_cuda()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 32, 32, generator=generator).to(cuda)
    y = (torch.arange(32) % 10).to(cuda)
    model = build_model({"name": "resnet9"}, (3, 32, 32), 10, init_seed=0)
    recipe = Recipe(epochs=2, batch_size=16, lr=0.4, schedule="triangular", peak_epoch=1)
    train_model(model, x, y, recipe, torch.Generator().manual_seed(1), cuda, **QUIET)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(int(m.num_batches_tracked) == 4 for m in norms)  # 2 epochs x 2 batches
    logits = predict_logits(model, x, cuda)
    assert logits.dtype == np.float32 and logits.shape == (32, 10)
    assert np.isfinite(logits).all()


def test_interrupted_training_resumes_to_the_same_weights_on_cuda(tmp_path, deterministic):
    """As on the CPU (tests/test_training.py): killed after epoch 2, resumed from the file
    saved in on_epoch_end (loaded to the CPU, as a restarted job does)."""
    cuda = require_cuda()
    x, y = blobs(cuda)

    class Interrupted(Exception):
        pass

    undisturbed = train_model(mlp(x), x, y, RECIPE, torch.Generator().manual_seed(1), cuda,
                              **QUIET)
    path = tmp_path / "current.pt"

    def checkpoint_then_die(state):
        save_torch(path, {"state": state})
        if state.epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_model(mlp(x), x, y, RECIPE, torch.Generator().manual_seed(1), cuda,
                    on_epoch_end=checkpoint_then_die, **QUIET)
    resumed = train_model(mlp(x), x, y, RECIPE, torch.Generator().manual_seed(1), cuda,
                          resume=load_torch(path)["state"], **QUIET)
    for name, value in undisturbed.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), f"{name} differs after resuming"


def test_workflow_jobs_run_on_cuda(tmp_path):
    """A training shard and an unlearning shard as the workflow's jobs run them on a GPU."""
    cuda = require_cuda()
    config = validate(tiny_config())
    config["models"]["resume_checkpoint_seconds"] = 0
    checkpoint, logits = train_shard(config, "original", 0, tmp_path / "resume", device=cuda,
                                     **QUIET)
    assert checkpoint["device"] == torch.cuda.get_device_name(cuda)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    assert all(value.device.type == "cpu" for model in checkpoint["models"]
               for value in model["state_dict"].values())  # checkpoints load anywhere
    setting = next(s for s in method_settings(config) if s.entry == "gradient_descent")
    forget = np.arange(0, 60, 2)
    unlearned, runs, _ = unlearn_shard(config, setting, "random_30", forget, checkpoint,
                                       device=cuda, **QUIET)
    assert unlearned.dtype == np.float32 and unlearned.shape == logits.shape
    assert (runs["changed_weights"] > 0).all() and not runs["diverged"].any()
    assert (runs["unlearning_seconds"] > 0).all()
