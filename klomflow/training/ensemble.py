"""Train many models of one architecture together: one batched pass per step.

A shard's models differ only in their seeds (and subset models in their
training indices), so the M models of an ensemble can run as one network:
- linear layers hold stacked weights [M, out, in] and run as one batched
  matmul on inputs [M, batch, in];
- convolutions concatenate the M models' filters and run as one grouped
  convolution (`groups=M`) on inputs whose channels hold the M models'
  batches side by side ([batch, M * channels, H, W]); BatchNorm over those
  channels is exactly per-model BatchNorm, running statistics included;
- the loss is the sum of the M per-model mean losses, so each model's
  gradient is the gradient of its own loss alone;
- SGD (momentum, Nesterov, weight decay) and Adam act elementwise, so one
  optimiser over the stacked tensors keeps every model's own state.

Each model keeps exactly its sequential recipe: it is initialised from its
own model (built with its seed as `build_model` does), draws each epoch's
permutation of its own training indices from its own generator (the same
draws as `training.train_model`), and sees batches of the same sizes in the
same order, the last one short. Only float summation order differs, so
ensemble-trained weights equal sequential ones to float tolerance after a
step and statistically after training (tests/test_ensemble.py).
`unstack` returns per-model state dicts that load into the original classes.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.nn import functional as F

from klomflow.training import models as architectures
from klomflow.training.loop import Recipe, TrainingState, autocast, learning_rate, make_optimizer

# How activations are laid out between layers: MODEL_FIRST is [M, batch, *shape] before
# flattening and [M, features, batch] after; CHANNELS is [batch, M * channels, H, W]
# (model m's channels are a contiguous block).
MODEL_FIRST, CHANNELS = "model_first", "channels"


# Most models one CPU ensemble trains at once. Measured on the default MLP recipe (1 thread):
# CPU time per model is about the same from 8 to 50 models and 25-50% higher at 100, whose
# stacked weights, gradients and momenta (23 MB) no longer fit the caches. On CUDA a whole
# shard trains at once (models.seeds_per_job bounds it).
CPU_MAX_MEMBERS = 50


def max_members(device) -> int | None:
    """Most models one ensemble should hold on `device` (None: no limit)."""
    return CPU_MAX_MEMBERS if torch.device(device).type == "cpu" else None


class StackedLinear(nn.Module):
    """M linear layers as one batched matmul, on features-first activations [M, in, batch].

    Features first because the batch is the long dimension: with [M, batch, in]
    the narrow output of a classifier head (10 columns) runs several times
    slower in MKL's batched matmul on the CPU.
    """

    def __init__(self, linears: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in linears]))
        has_bias = linears[0].bias is not None
        self.bias = (nn.Parameter(torch.stack([layer.bias.detach() for layer in linears]))
                     if has_bias else None)

    def forward(self, x):  # [M, in, batch] -> [M, out, batch]
        if self.bias is None:
            return torch.bmm(self.weight, x)
        return torch.baddbmm(self.bias.unsqueeze(2), self.weight, x)

    def member_state(self, member: int) -> dict:
        state = {"weight": self.weight[member]}
        if self.bias is not None:
            state["bias"] = self.bias[member]
        return state


class GroupedConv2d(nn.Module):
    def __init__(self, convolutions: list[nn.Conv2d]):
        super().__init__()
        first = convolutions[0]
        if first.groups != 1 or first.padding_mode != "zeros":
            raise NotImplementedError("ensemble: only plain convolutions can be stacked")
        self.members, self.out_channels = len(convolutions), first.out_channels
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation
        self.weight = nn.Parameter(torch.cat([layer.weight.detach() for layer in convolutions]))
        self.bias = (nn.Parameter(torch.cat([layer.bias.detach() for layer in convolutions]))
                     if first.bias is not None else None)

    def forward(self, x):  # [batch, M * in, H, W] -> [batch, M * out, H', W']
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        groups=self.members)

    def member_state(self, member: int) -> dict:
        block = slice(member * self.out_channels, (member + 1) * self.out_channels)
        state = {"weight": self.weight[block]}
        if self.bias is not None:
            state["bias"] = self.bias[block]
        return state


class StackedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over M * C channels: each channel is one model's, so it is per-model BatchNorm."""

    def __init__(self, norms: list[nn.BatchNorm2d]):
        first = norms[0]
        # The members' dtype and device (nn.BatchNorm2d's default is float32 on the CPU, which
        # a float64 or half-precision model cannot run against).
        like = next((tensor for tensor in (first.weight, first.running_mean)
                     if tensor is not None), None)
        placement = {} if like is None else {"dtype": like.dtype, "device": like.device}
        super().__init__(first.num_features * len(norms), first.eps, first.momentum,
                         first.affine, first.track_running_stats, **placement)
        self.channels = first.num_features
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(self, name) is not None:
                    getattr(self, name).copy_(torch.cat([getattr(n, name) for n in norms]))
            if self.track_running_stats:
                self.num_batches_tracked.copy_(first.num_batches_tracked)

    def member_state(self, member: int) -> dict:
        block = slice(member * self.channels, (member + 1) * self.channels)
        state = {name: getattr(self, name)[block]
                 for name in ("weight", "bias", "running_mean", "running_var")
                 if getattr(self, name) is not None}
        if self.track_running_stats:
            state["num_batches_tracked"] = self.num_batches_tracked
        return state


class StackedFlatten(nn.Module):
    """nn.Flatten per model, to features-first [M, features, batch]."""

    def __init__(self, members: int, layout: str):
        super().__init__()
        self.members, self.layout = members, layout

    def forward(self, x):
        if self.layout == CHANNELS:  # [batch, M * C, H, W] -> [M, C * H * W, batch]
            return x.reshape(x.shape[0], self.members, -1).permute(1, 2, 0)
        return x.flatten(2).transpose(1, 2)  # [M, batch, *shape] -> [M, features, batch]


# Modules that act per channel or per element, the same in either layout.
_SHARED = (nn.ReLU, nn.MaxPool2d, nn.AdaptiveMaxPool2d, architectures.Scale)


def _stack(modules: list[nn.Module], layout: str, prefix: str, stacked: dict):
    """The stacked counterpart of the M same-shaped `modules`, and the layout after it.

    `stacked` collects {template name prefix: stacked module} for `unstack`.
    """
    first = modules[0]
    if isinstance(first, nn.Sequential):
        children = []
        for name in first._modules:
            child, layout = _stack([module._modules[name] for module in modules], layout,
                                   f"{prefix}{name}.", stacked)
            children.append(child)
        return nn.Sequential(*children), layout
    if isinstance(first, architectures.Mlp):
        layers, layout = _stack([module.layers for module in modules], layout,
                                f"{prefix}layers.", stacked)
        return layers, layout
    if isinstance(first, architectures.Residual):
        block, after = _stack([module.block for module in modules], layout, f"{prefix}block.",
                              stacked)
        if after != layout:
            raise NotImplementedError("ensemble: a residual block may not change the layout")
        return architectures.Residual(block), layout
    if isinstance(first, nn.Linear):
        if layout != MODEL_FIRST:
            raise NotImplementedError("ensemble: a linear layer needs flattened inputs")
        module = StackedLinear(modules)
    elif isinstance(first, nn.Conv2d):
        module = GroupedConv2d(modules)
    elif isinstance(first, nn.BatchNorm2d):
        module = StackedBatchNorm2d(modules)
    elif isinstance(first, nn.Flatten):
        if (first.start_dim, first.end_dim) != (1, -1):
            raise NotImplementedError("ensemble: only nn.Flatten() can be stacked")
        return StackedFlatten(len(modules), layout), MODEL_FIRST
    elif isinstance(first, _SHARED):
        return copy.deepcopy(first), layout
    else:
        raise NotImplementedError(
            f"ensemble: cannot stack {type(first).__name__}; set train.ensemble: false"
        )
    stacked[prefix] = module
    return module, layout


class Ensemble(nn.Module):
    """M models of one architecture run as one network.

    forward takes inputs [M, batch, *input_shape] (model m's batch in row m)
    and returns logits [M, n_classes, batch].
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = len(members)
        self.template_keys = list(members[0].state_dict())
        self.input_layout = (CHANNELS if any(isinstance(m, nn.Conv2d) for m in members[0].modules())
                             else MODEL_FIRST)
        self._stacked = {}
        self.network, layout = _stack(members, self.input_layout, "", self._stacked)
        if layout != MODEL_FIRST:
            raise NotImplementedError("ensemble: the network must end in a linear layer")
        self.memory_format = torch.contiguous_format

    def forward(self, x):
        if self.input_layout == CHANNELS:  # [M, batch, C, H, W] -> [batch, M * C, H, W]
            x = x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])
            x = x.contiguous(memory_format=self.memory_format)
        return self.network(x)

    def use_channels_last(self) -> Ensemble:
        """NHWC activations and weights: faster convolutions on CUDA."""
        self.memory_format = torch.channels_last
        return self.to(memory_format=torch.channels_last)

    def stack_like_parameters(self, per_model: list[dict]) -> dict:
        """Per-model tensors shaped like the models' parameters ({parameter name: tensor},
        one dict per model, in member order) laid out as this ensemble's parameters:
        {ensemble parameter name: stacked tensor}, e.g. per-model masks."""
        names = {module: name for name, module in self.named_modules()}
        stacked = {}
        for prefix, module in self._stacked.items():
            # Linear weights stack as [M, ...]; convolution and BatchNorm ones are concatenated.
            join = torch.stack if isinstance(module, StackedLinear) else torch.cat
            for key, parameter in module.named_parameters(recurse=False):
                value = join([member[prefix + key] for member in per_model]).to(parameter.device)
                if value.shape != parameter.shape:
                    raise ValueError(f"ensemble: {prefix + key} does not stack to "
                                     f"{tuple(parameter.shape)}")
                stacked[f"{names[module]}.{key}"] = value
        return stacked

    def unstack(self) -> list[dict]:
        """Per-model state dicts with the original models' keys, on the CPU."""
        states = [{} for _ in range(self.members)]
        for prefix, module in self._stacked.items():
            for member, state in enumerate(states):
                for name, value in module.member_state(member).items():
                    state[prefix + name] = value.detach().cpu().clone()
        for state in states:
            if list(state) != self.template_keys:
                raise RuntimeError("ensemble: unstacked state does not match the model's keys")
        return states


def train_ensemble(members: list[nn.Module], x, y, member_indices, recipe: Recipe,
                   generators: list[torch.Generator], device, log=print, labels=None,
                   resume: TrainingState | None = None, on_epoch_end=None) -> list[dict]:
    """Train `members` together; model m on x[member_indices[m]], y[member_indices[m]].

    The ensemble counterpart of `training.train_model`: `generators[m]` draws
    model m's permutations exactly as there. Every model must have the same
    number of training points (so that all take the same steps). `resume` and
    `on_epoch_end` carry the whole ensemble's TrainingState (its `generator` is
    the list of the models' generator states). Returns the trained models'
    state dicts (CPU), in the order of `members`.
    """
    labels = labels or [f"model {member}" for member in range(len(members))]
    indices = torch.stack([torch.as_tensor(member, dtype=torch.long) for member in member_indices])
    n = indices.shape[1]
    indices = indices.to(device)
    ensemble = Ensemble(members).to(device)
    if device.type == "cuda" and ensemble.input_layout == CHANNELS:
        ensemble = ensemble.use_channels_last()
    # Fused: one pass over the stacked tensors per step instead of one per operation;
    # the optimiser step otherwise costs a fifth of an MLP ensemble's step on the CPU.
    optimizer = make_optimizer(ensemble.parameters(), recipe.optimizer, recipe.lr, recipe.momentum,
                               recipe.weight_decay, recipe.nesterov, fused=True)
    steps_per_epoch = -(-n // recipe.batch_size)
    first_epoch = 0
    if resume is not None:
        ensemble.load_state_dict(resume.model)
        optimizer.load_state_dict(resume.optimizer)
        for generator, state in zip(generators, resume.generator):
            generator.set_state(state)
        first_epoch = resume.epoch
        for label in labels:
            log(f"{label}: resuming from epoch checkpoint after epoch {first_epoch}")
    for epoch in range(first_epoch, recipe.epochs):
        ensemble.train()
        started = time.perf_counter()
        loss_sum = torch.zeros(len(members), device=device)
        correct = torch.zeros(len(members), device=device)
        # Each model's permutation from its own generator, as training.batches draws it.
        orders = torch.stack([torch.randperm(n, generator=generator) for generator in generators])
        points = indices.gather(1, orders.to(device))  # [M, n] training-set rows, shuffled
        for index, batch in enumerate(points.split(recipe.batch_size, dim=1)):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(recipe, epoch * steps_per_epoch + index,
                                            steps_per_epoch)
            targets = y[batch]  # [M, batch]
            with autocast(device):
                logits = ensemble(x[batch])  # [M, classes, batch]
                member_losses = F.cross_entropy(logits, targets, reduction="none",
                                                label_smoothing=recipe.label_smoothing).mean(1)
            optimizer.zero_grad(set_to_none=True)
            # Model m's parameters reach only its own loss: the gradient of the
            # sum is each model's gradient of its own mean loss.
            member_losses.sum().backward()
            optimizer.step()
            loss_sum += member_losses.detach().float() * batch.shape[1]
            # argmax along a contiguous axis: along the strided class axis it is 6x slower.
            predicted = logits.detach().transpose(1, 2).contiguous().argmax(-1)
            correct += (predicted == targets).sum(1)
        seconds = time.perf_counter() - started
        for label, loss, right in zip(labels, loss_sum.tolist(), correct.tolist()):
            log(f"{label}: epoch {epoch + 1}/{recipe.epochs} loss {loss / n:.4f} "
                f"train accuracy {right / n:.4f} ({seconds:.2f}s for {len(members)} models "
                "together)")
        if on_epoch_end is not None:
            on_epoch_end(TrainingState(ensemble.state_dict(), optimizer.state_dict(),
                                       [generator.get_state() for generator in generators],
                                       epoch + 1))
    return ensemble.unstack()
