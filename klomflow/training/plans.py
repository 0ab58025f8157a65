"""What a training or unlearning job allocates and writes, from shapes alone (torch-free).

The allocation plans of klomflow/training/models.py, klomflow/jobs/runs.py and
workflow_scripts/train_models.py, restated as arithmetic for `klomflow budget`
(klomflow/jobs/budget.py): a model's parameter count in closed form per layer, the
bytes of a shard's checkpoint and logits, and the job's peak host memory beyond the
interpreter's baseline. A change to what those allocate changes these functions too;
tests/test_budget.py checks them against torch's own counts and a measured run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from klomflow.io import npy_bytes

# torch.save's zip container and the pickled record around each model, beyond the tensor
# bytes (measured here with torch 2.14: 280-410 B per tensor, about 4 B per int32 training
# index plus a few hundred bytes per record, and the config's pickle).
TENSOR_OVERHEAD_BYTES = 400
RECORD_OVERHEAD_BYTES = 500
CHECKPOINT_OVERHEAD_BYTES = 16_000

# klomflow/training/ensemble.py: CPU_MAX_MEMBERS (kept equal; imported there with torch).
CPU_ENSEMBLE_MEMBERS = 50


@dataclass(frozen=True)
class ModelSize:
    """A model's state_dict: float32 parameters and buffers, int64 counters, tensors."""

    parameters: int
    float_buffers: int = 0
    counters: int = 0  # BatchNorm's num_batches_tracked, int64 scalars
    tensors: int = 0

    @property
    def state_bytes(self) -> int:
        return 4 * (self.parameters + self.float_buffers) + 8 * self.counters


def _linear(width_in, width_out, bias=True):
    return ModelSize(width_in * width_out + (width_out if bias else 0), tensors=1 + bias)


def _conv_bn(channels_in, channels_out, kernel_size=3):
    # Conv2d without bias; BatchNorm2d: weight, bias, running mean and variance, counter.
    return ModelSize(
        channels_in * channels_out * kernel_size**2 + 2 * channels_out,
        float_buffers=2 * channels_out,
        counters=1,
        tensors=6,
    )


def _total(layers) -> ModelSize:
    return ModelSize(
        *(
            sum(getattr(layer, name) for layer in layers)
            for name in ("parameters", "float_buffers", "counters", "tensors")
        )
    )


def model_size(model_config: dict, input_shape, n_classes: int) -> ModelSize:
    """The state_dict of models.build_model(model_config, input_shape, n_classes), counted."""
    name = model_config["name"]
    if name == "mlp":
        sizes = [math.prod(input_shape), *model_config.get("hidden", [256]), n_classes]
        return _total([_linear(a, b) for a, b in zip(sizes, sizes[1:])])
    if name == "resnet9":
        channels = input_shape[0]
        return _total(
            [
                _conv_bn(channels, 64),
                _conv_bn(64, 128, kernel_size=5),
                _conv_bn(128, 128),
                _conv_bn(128, 128),
                _conv_bn(128, 256),
                _conv_bn(256, 256),
                _conv_bn(256, 256),
                _conv_bn(256, 128),
                _linear(128, n_classes, bias=False),
            ]
        )
    raise ValueError(f"model.name: unknown model {name!r}; choose 'mlp' or 'resnet9'")


@dataclass
class Plan:
    """A job's peak host memory beyond the interpreter's baseline, and its outputs' bytes."""

    peak_bytes: int
    written_bytes: dict = field(default_factory=dict)  # output name -> bytes
    flops: float = 0.0  # of its float64 matrix products, where they dominate its time


def checkpoint_bytes(n_models: int, model: ModelSize, n_train_points: int) -> int:
    """A shard checkpoint (runs.train_shard): per model its state_dict and its int32
    training indices; tensor bytes exact, the container's overhead estimated."""
    per_model = (
        model.state_bytes
        + TENSOR_OVERHEAD_BYTES * model.tensors
        + 4 * n_train_points
        + RECORD_OVERHEAD_BYTES
    )
    return n_models * per_model + CHECKPOINT_OVERHEAD_BYTES


def training_plan(
    n_models: int,
    model: ModelSize,
    n_train_points: int,
    n_points: int,
    n_classes: int,
    input_size: int,
    on_gpu: bool,
    subset_masks_of: int = 0,
) -> Plan:
    """A train_originals / train_oracles / train_subset_models job (runs.train_shard).

    Host memory: the dataset as float32 (train + validation, and the evaluation copy
    `eval_x` that predict_logits concatenates); every finished model's state_dict and
    logits, reloaded for the checkpoint, plus the stacked logits; on the CPU the
    ensemble's weights, gradients and momentum (CPU_ENSEMBLE_MEMBERS at a time). On a
    GPU the training state lives in GPU memory. `subset_masks_of`: n_train for subset
    models, whose job also writes their masks, bool [n_models, n_train].
    """
    logits = n_points * n_classes * 4
    dataset = n_points * input_size * 4
    peak = 2 * dataset + n_models * (model.state_bytes + 2 * logits)
    if not on_gpu:
        peak += 3 * model.state_bytes * min(n_models, CPU_ENSEMBLE_MEMBERS)
    written = {
        "checkpoint": checkpoint_bytes(n_models, model, n_train_points),
        "logits": npy_bytes((n_models, n_points, n_classes), "float32"),
    }
    if subset_masks_of:
        written["masks"] = npy_bytes((n_models, subset_masks_of), "bool")
        peak += n_models * subset_masks_of * 2  # the masks and the bool mask of each model
    return Plan(peak, written)


def unlearning_plan(
    n_models: int,
    model: ModelSize,
    n_train: int,
    n_points: int,
    n_classes: int,
    input_size: int,
    on_gpu: bool,
    saves_checkpoints: bool,
    datamodel_rows_bytes: int = 0,
) -> Plan:
    """An unlearn job (runs.unlearn_shard): the original shard's checkpoint loaded whole,
    the dataset, each model's logits; a datamodel method also reads the rows of its
    forget set (`datamodel_rows_bytes`, through a memory map)."""
    logits = n_points * n_classes * 4
    dataset = n_points * input_size * 4
    original = checkpoint_bytes(n_models, model, n_train)
    peak = original + 2 * dataset + 2 * n_models * logits + datamodel_rows_bytes
    if not on_gpu:
        peak += 4 * model.state_bytes  # a copy being unlearned, gradients, optimizer state
    written = {
        "logits": npy_bytes((n_models, n_points, n_classes), "float32"),
        "runs": 2_000 * n_models + 8_000,
    }  # Parquet, a row per model (estimated)
    if saves_checkpoints:
        written["checkpoint"] = checkpoint_bytes(n_models, model, 0)
        peak += n_models * model.state_bytes
    return Plan(peak, written)
