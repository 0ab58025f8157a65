"""Small published-benchmark folders in the KLOM-models and EasyDUB layouts (PUBLISHED.md).

The originals are ResNet-9s of the authors' class, re-stated below from their
code (not klomflow's model: a test built on klomflow's own network could not
catch a mismatch with the published one), with random initialisations (seeds
100+k), saved as the published code saves them: a plain state dict with the
`model.` prefix of the WrappedModel, the residual child named `module`,
channels_last weights. Their logits and margins are the authors' network's
outputs on the small CIFAR-10-format files of dataset_files.py with the
published normalisation, in eval mode, in float32. Oracles are margins and
logits only: random logits whose true class is lowered on the forget points
(an oracle never saw them). Point and model
counts shrink; file names, shapes, dtypes and point orders follow the layouts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from dataset_files import write_cifar10

from klomflow.data.datasets import load_dataset
from klomflow.metrics.margins import margins_from_logits
from klomflow.training.loop import predict_logits

EPOCH = 23


# --- The authors' ResNet-9, re-stated from data-unlearning-bench ------------------------------
# (unlearning/models/resnet9.py on the branch that trained the models; the same network is in
# unlearning_bench/models.py and EasyDUB's easydub/models.py.) Only the published names
# matter for the state dict: `model.` (the wrapper's attribute), Sequential indices 0-10, the
# residual child `module`; layer 6 has no padding, the head no bias, the output is x0.2.


class AuthorsMul(torch.nn.Module):
    """Multiplies by a constant (the authors' `Mul`; no parameter, nothing in the state dict)."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def forward(self, x):
        return x * self.weight


class AuthorsFlatten(torch.nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class AuthorsResidual(torch.nn.Module):
    """x + f(x), f held as the attribute `module` (hence the keys `2.module.0.0.weight`)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return x + self.module(x)


class AuthorsWrappedModel(torch.nn.Module):
    """The wrapper the published originals were trained in: its attribute `model` is the
    network, so every saved key starts with `model.`."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, index=None):
        return self.model(x)


def authors_conv_bn(channels_in, channels_out, kernel_size=3, stride=1, padding=1):
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels_in, channels_out, kernel_size=kernel_size, stride=stride,
                        padding=padding, bias=False),
        torch.nn.BatchNorm2d(channels_out),
        torch.nn.ReLU(inplace=True),
    )


def authors_resnet9(num_classes=10, wrapped=True):
    """The authors' `ResNet9(num_classes, wrapped=True, channels_last=True)`."""
    network = torch.nn.Sequential(
        authors_conv_bn(3, 64, kernel_size=3, stride=1, padding=1),
        authors_conv_bn(64, 128, kernel_size=5, stride=2, padding=2),
        AuthorsResidual(torch.nn.Sequential(authors_conv_bn(128, 128),
                                            authors_conv_bn(128, 128))),
        authors_conv_bn(128, 256, kernel_size=3, stride=1, padding=1),
        torch.nn.MaxPool2d(2),
        AuthorsResidual(torch.nn.Sequential(authors_conv_bn(256, 256),
                                            authors_conv_bn(256, 256))),
        authors_conv_bn(256, 128, kernel_size=3, stride=1, padding=0),
        torch.nn.AdaptiveMaxPool2d((1, 1)),
        AuthorsFlatten(),
        torch.nn.Linear(128, num_classes, bias=False),
        AuthorsMul(0.2),
    ).to(memory_format=torch.channels_last)
    return AuthorsWrappedModel(network) if wrapped else network


def trained_like_authors_resnet9(seed: int, num_classes=10, inputs=None) -> torch.nn.Module:
    """An authors' ResNet-9 whose outputs depend on its inputs and on every imported tensor.

    A fresh initialisation predicts nearly uniform logits whatever the input. Here the
    BatchNorm affine parameters are random, the running statistics are those of `inputs`
    (as a trained model's are of its data; random when None), and the head is 20 times
    larger: margins then spread over several units between points, so a point order or
    a label other than the true one shows. In eval mode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = authors_resnet9(num_classes)
    generator = torch.Generator().manual_seed(seed + 100)
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        model.model[9].weight.mul_(20.0)
        for module in batch_norms:
            module.running_mean.normal_(0, 0.2, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.weight.uniform_(0.5, 1.5, generator=generator)
            module.bias.normal_(0, 0.1, generator=generator)
        if inputs is not None:  # one pass, cumulative averages: the statistics of `inputs`
            for module in batch_norms:
                module.reset_running_stats()
                module.momentum = None
            model.train()(inputs)
            for module in batch_norms:
                module.momentum = 0.1
        for module in batch_norms:
            module.num_batches_tracked.fill_(4704)  # 24 epochs of 196 batches
    return model.eval()


def published_state_dict(model) -> dict:
    """The checkpoint the published code writes for `model` (an authors' ResNet-9): its
    state dict, as `torch.save(model.state_dict(), ...)` in their training loop."""
    return {key: value.clone() for key, value in model.state_dict().items()}


class Fixture:
    """Models, margins and forget sets shared by the two layouts' folders."""

    def __init__(self, root, n_originals=4, n_oracles=5, per_batch=8, n_test=10, seed=0):
        root = Path(root)
        self.data_dir = root / "data"
        self.train_labels, self.test_labels = write_cifar10(self.data_dir, per_batch, n_test, seed)
        self.labels = np.concatenate([self.train_labels, self.test_labels])
        self.n_train = len(self.train_labels)
        dataset = load_dataset({"name": "cifar10", "data_dir": str(self.data_dir),
                                "verify_checksums": False})
        rng = np.random.default_rng(seed)
        # Set 2: sorted; set 10: the file's order is not sorted (as the published set 10).
        self.forget_sets = {2: np.sort(rng.choice(self.n_train, 4, replace=False)),
                            10: np.array([7, 3, 30, 12, 21], dtype=np.int64)}
        self.models, self.original_logits = [], []
        for k in range(n_originals):
            model = trained_like_authors_resnet9(100 + k, inputs=dataset.eval_x)
            self.models.append(model)
            with torch.no_grad():
                self.original_logits.append(
                    predict_logits(model, dataset.eval_x, torch.device("cpu")))
        self.original_logits = np.stack(self.original_logits)  # [n_originals, n_points, 10]
        self.original_margins = margins_from_logits(self.original_logits, self.labels)
        self.oracle_logits = {}
        for forget_id, forget in self.forget_sets.items():
            logits = rng.normal(0, 1, size=(n_oracles, len(self.labels), 10)).astype(np.float32)
            rows = np.arange(len(self.labels))
            logits[:, rows, self.labels] += 2.0  # oracles fit the points they trained on...
            logits[:, forget, self.labels[forget]] -= 16.0  # ...and never saw the forget set
            self.oracle_logits[forget_id] = logits
        self.oracle_margins = {forget_id: margins_from_logits(logits, self.labels)
                               for forget_id, logits in self.oracle_logits.items()}

    def split(self, array, logits=False):
        """The training points' part: axis -2 of logits [..., n_points, 10], else axis -1."""
        return array[..., :self.n_train, :] if logits else array[..., :self.n_train]

    def val(self, array, logits=False):
        return array[..., self.n_train:, :] if logits else array[..., self.n_train:]


def write_klom_models(fixture: Fixture, root, oracle_root="oracles") -> Path:
    """A KLOM-models folder: full_models/CIFAR10, <oracle_root>/CIFAR10, forget_set_indices."""
    root = Path(root)
    originals = root / "full_models" / "CIFAR10"
    originals.mkdir(parents=True)
    for k, model in enumerate(fixture.models):
        torch.save(published_state_dict(model), originals / f"sd_{k}____epoch_{EPOCH}.pt")
        torch.save(torch.tensor(fixture.split(fixture.original_logits[k], logits=True)),
                   originals / f"train_logits_{k}.pt")
        torch.save(torch.tensor(fixture.val(fixture.original_logits[k], logits=True)),
                   originals / f"val_logits_{k}.pt")
    # `*_all.pt` files are saved as a transposed view (non-contiguous), as the real ones.
    for split, part in (("train", fixture.split), ("val", fixture.val)):
        margins = torch.tensor(part(fixture.original_margins))
        torch.save(margins.T.contiguous().T, originals / f"{split}_margins_all.pt")
    for forget_id, forget in fixture.forget_sets.items():
        margins_folder = root / oracle_root / "CIFAR10" / "only_margins" / f"forget_set_{forget_id}"
        margins_folder.mkdir(parents=True)
        for split, part in (("train", fixture.split), ("val", fixture.val)):
            margins = torch.tensor(part(fixture.oracle_margins[forget_id]))
            torch.save(margins.T.contiguous().T, margins_folder / f"{split}_margins_all.pt")
        logits_folder = root / oracle_root / "CIFAR10" / f"forget_set_{forget_id}"
        logits_folder.mkdir(parents=True)
        for k, logits in enumerate(fixture.oracle_logits[forget_id]):
            torch.save(torch.tensor(fixture.split(logits, logits=True)),
                       logits_folder / f"train_logits_{k}.pt")
            torch.save(torch.tensor(fixture.val(logits, logits=True)),
                       logits_folder / f"val_logits_{k}.pt")
        indices = root / "forget_set_indices" / "CIFAR10"
        indices.mkdir(parents=True, exist_ok=True)
        np.save(indices / f"forget_set_{forget_id}.npy", forget.astype("<i8"))
    return root


def _easydub_path(root, kind, role, part, model_id) -> Path:
    path = (Path(root) / kind / "cifar10" / role / part / "resnet9"
            / f"id_{model_id}_epoch_{EPOCH}.npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def bfloat16_margins(logits, labels) -> np.ndarray:
    """Margins as a separate pass under bfloat16 autocast gives them: from the logits
    rounded to bfloat16 (about 1e-2 from the float32 logits' margins)."""
    rounded = torch.tensor(logits).to(torch.bfloat16).float().numpy()
    return margins_from_logits(rounded, labels)


def write_easydub(fixture: Fixture, root, forget_order="file", margins="float32") -> Path:
    """An EasyDUB folder: one .npy per model and split; oracles as retain ‖ forget ‖ val.

    `forget_order`: the points of every `forget` file (originals' and oracles', margins
    and logits) in the forget file's order ("file", as EasyDUB's code writes them) or
    in ascending index order ("sorted", which a snapshot may hold for set 10).
    `margins`: "float32", the float32 logits' margins, or "bfloat16", each model's
    margins from its logits rounded to bfloat16 (the logit files stay float32).
    """
    root = Path(root)
    in_order = {"file": lambda forget: forget, "sorted": np.sort}[forget_order]
    if margins == "bfloat16":
        original_margins = bfloat16_margins(fixture.original_logits, fixture.labels)
        oracle_margins = {forget_id: bfloat16_margins(logits, fixture.labels)
                          for forget_id, logits in fixture.oracle_logits.items()}
    else:
        original_margins, oracle_margins = fixture.original_margins, fixture.oracle_margins
    checkpoints = root / "models" / "cifar10" / "pretrain" / "resnet9"
    checkpoints.mkdir(parents=True)
    for k, model in enumerate(fixture.models):
        torch.save(published_state_dict(model), checkpoints / f"id_{k}_epoch_{EPOCH}.pt")
        for kind, values in (("logits", fixture.original_logits[k]),
                             ("margins", original_margins[k])):
            is_logits = kind == "logits"
            np.save(_easydub_path(root, kind, "pretrain", "retain", k),
                    fixture.split(values, is_logits))
            np.save(_easydub_path(root, kind, "pretrain", "val", k), fixture.val(values, is_logits))
            for forget_id, forget in fixture.forget_sets.items():
                np.save(_easydub_path(root, kind, "pretrain", f"forget_{forget_id}", k),
                        values[in_order(forget)])
    for forget_id, forget in fixture.forget_sets.items():
        keep = np.ones(fixture.n_train, dtype=bool)
        keep[forget] = False
        retain = np.flatnonzero(keep)  # ascending, as EasyDUB's mask
        role = f"oracle/forget_{forget_id}"
        for kind, models in (("logits", fixture.oracle_logits[forget_id]),
                             ("margins", oracle_margins[forget_id])):
            for k, values in enumerate(models):
                np.save(_easydub_path(root, kind, role, "retain", k), values[retain])
                np.save(_easydub_path(root, kind, role, "forget", k), values[in_order(forget)])
                np.save(_easydub_path(root, kind, role, "val", k),
                        fixture.val(values, kind == "logits"))
        folder = root / "forget_sets" / "cifar10"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"forget_set_{forget_id}.npy", forget.astype("<i8"))
    return root
