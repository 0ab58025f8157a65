"""Training: resuming by weights, and the learning-rate schedule at its corners."""

import numpy as np
import pytest
import torch
from workflow import tiny_config

from klomflow.config import validate
from klomflow.io import load_torch, save_torch
from klomflow.jobs.runs import train_shard
from klomflow.training import loop as training
from klomflow.training.loop import Recipe, learning_rate, train_model
from klomflow.training.models import build_model

# Momentum, weight decay and a per-iteration triangular schedule: a resume that
# loses the optimiser state, the shuffling generator or the step count shows up
# in the weights.
RECIPE = Recipe(epochs=5, batch_size=16, lr=0.1, momentum=0.9, weight_decay=5e-4,
                schedule="triangular", peak_epoch=2)


class Interrupted(Exception):
    """Stands for a job killed right after its epoch checkpoint was written."""


def blobs(n=70, n_features=6, n_classes=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    x = torch.randn(n_classes, n_features, generator=generator)[y] * 2 + torch.randn(
        n, n_features, generator=generator)
    return x, y


def fresh_model(x, seed=3):
    return build_model({"name": "mlp", "hidden": [12]}, tuple(x.shape[1:]), 3, init_seed=seed)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_interrupted_training_resumes_to_the_same_weights(tmp_path, optimizer):
    """Killed inside on_epoch_end after epoch 2, resumed from the file it saved."""
    recipe = Recipe(**(vars(RECIPE) | {"optimizer": optimizer}))
    x, y = blobs()
    quiet = {"device": torch.device("cpu"), "log": lambda message: None}
    undisturbed = train_model(fresh_model(x), x, y, recipe, torch.Generator().manual_seed(7),
                              **quiet)
    checkpoint = tmp_path / "current.pt"

    def checkpoint_then_die(state):
        # As runs._train_one: serialised at once, so later epochs cannot alter it.
        save_torch(checkpoint, {"state": state})
        if state.epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_model(fresh_model(x), x, y, recipe, torch.Generator().manual_seed(7),
                    on_epoch_end=checkpoint_then_die, **quiet)
    state = load_torch(checkpoint)["state"]
    assert state.epoch == 2
    # The restarted job builds everything afresh: new model, optimiser and generator.
    resumed = train_model(fresh_model(x), x, y, recipe, torch.Generator().manual_seed(7),
                          resume=state, **quiet)
    expected, actual = undisturbed.state_dict(), resumed.state_dict()
    assert list(actual) == list(expected)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), f"{name} differs after resuming"



def test_a_killed_job_reuses_its_finished_models_and_resumes_the_one_in_progress(tmp_path):
    """One model at a time (tiny.yaml: train.ensemble false), killed at model 1's epoch 2
    checkpoint: the restarted job keeps model 0 and trains model 1 on from epoch 3.
    (Ensembles: tests/test_ensemble.py, and under SLURM tests/test_slurm.py.)"""
    config = validate(tiny_config())
    assert config["train"]["ensemble"] is False
    config["models"]["resume_checkpoint_seconds"] = 0
    cpu = torch.device("cpu")
    _, uninterrupted = train_shard(config, "original", 0, tmp_path / "whole",
                                   log=lambda message: None, device=cpu)

    def log_then_die(message):
        if message.startswith("original model 1 ") and message.endswith(
                "epoch checkpoint after epoch 2"):
            raise Interrupted(message)

    with pytest.raises(Interrupted):
        train_shard(config, "original", 0, tmp_path / "resume", log=log_then_die, device=cpu)
    messages = []
    _, resumed = train_shard(config, "original", 0, tmp_path / "resume", log=messages.append,
                             device=cpu)
    assert [m.split(":")[1].strip() for m in messages if m.startswith("original model 0 ")] == [
        "already trained before the job restarted; reusing it"]
    model_1 = [m.split(": ", 1)[1] for m in messages if m.startswith("original model 1 ")]
    assert model_1[0] == "resuming from epoch checkpoint after epoch 2"
    assert [m.split(" loss")[0] for m in model_1 if m.startswith("epoch ") and " loss " in m] == [
        "epoch 3/4", "epoch 4/4"]
    np.testing.assert_array_equal(resumed, uninterrupted)

def test_learning_rate_schedule_corners():
    """Per iteration; the paper's CIFAR-10 numbers: 196 steps per epoch, peak at epoch 5 of 24."""
    paper = Recipe(epochs=24, lr=0.4, schedule="triangular", peak_epoch=5)
    steps = 196  # ceil(50,000 / 256)
    assert learning_rate(paper, 0, steps) == 0.0  # the first step does not move the weights
    assert learning_rate(paper, 5 * steps, steps) == pytest.approx(0.4, abs=1e-15)
    assert learning_rate(paper, 24 * steps, steps) == 0.0
    assert learning_rate(paper, 5 * steps // 2, steps) == pytest.approx(0.2)
    # Half-way down: epoch 14.5 of the 19 epochs from the peak to the end.
    assert learning_rate(paper, int(14.5 * steps), steps) == pytest.approx(0.2)
    # The last step the loop takes (24 * 196 - 1) is just above 0.
    assert learning_rate(paper, 24 * steps - 1, steps) == pytest.approx(0.4 / (19 * steps))
    cosine = Recipe(epochs=10, lr=0.3, schedule="cosine")
    assert learning_rate(cosine, 0, 7) == pytest.approx(0.3)
    assert learning_rate(cosine, 35, 7) == pytest.approx(0.15)
    assert learning_rate(cosine, 70, 7) == pytest.approx(0.0, abs=1e-15)
    constant = Recipe(epochs=3, lr=0.05, schedule="constant")
    assert {learning_rate(constant, step, 4) for step in (0, 5, 11)} == {0.05}
    with pytest.raises(ValueError, match="train.schedule"):
        learning_rate(Recipe(schedule="step"), 0, 4)


def test_training_sets_the_rate_of_every_iteration(monkeypatch):
    """The loop asks the schedule for steps 0..epochs*steps_per_epoch-1, in order."""
    asked = []
    schedule = training.learning_rate

    def recording(recipe, step, steps_per_epoch):
        asked.append((step, steps_per_epoch))
        return schedule(recipe, step, steps_per_epoch)

    monkeypatch.setattr(training, "learning_rate", recording)
    x, y = blobs(n=70)  # 70 points in batches of 16: 5 steps per epoch, the last one short
    train_model(fresh_model(x), x, y, RECIPE, torch.Generator().manual_seed(0),
                torch.device("cpu"), log=lambda message: None)
    assert asked == [(step, 5) for step in range(RECIPE.epochs * 5)]

