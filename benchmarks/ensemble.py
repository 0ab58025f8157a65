"""Benchmark: models per second, one model after another against one ensemble.

Run by hand: `python benchmarks/ensemble.py`. Measured side by side in one run:
 1. the default MLP recipe (config.yaml) on digits' full training set, at 1
    and 2 threads: sequential (`training.train_model`, after an untimed
    warm-up model) against an ensemble of `models.seeds_per_job` models
    (`ensemble.train_ensemble`, as a training job runs them: at most 50 per
    ensemble on the CPU);
 2. ResNet-9 on CIFAR-shaped random data (3x32x32, 10 classes):
    - on the CPU a smoke setting (a few models, a few steps);
    - on CUDA, when present, the paper recipe (batch 256, 24 epochs of 50,000
      images, bfloat16 autocast, channels_last): each variant runs a fixed
      number of steps after warm-up steps, and its time per step gives
      ResNet-9s per GPU-hour for the whole recipe (every step of the recipe
      is the same work), sequential against ensembles of several sizes.
The last line is `ensemble speed-up: X.Yx`, the default MLP recipe's ratio at
1 thread: training jobs run one thread each (`threads: 1`), one job per core,
so on a 2-core machine that is also the ratio of the machine's throughput;
the 2-thread ratio is printed beside it. Beside wall time it prints CPU
seconds per model (process time): on a shared machine wall time depends on
the other load, CPU time less so.
"""

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from klomflow.config import load
from klomflow.jobs.runs import dataset_for
from klomflow.training.ensemble import max_members, train_ensemble
from klomflow.training.loop import Recipe, pick_device, train_model
from klomflow.training.models import build_model

REPOSITORY = Path(__file__).resolve().parents[1]
PAPER_RECIPE = Recipe(epochs=24, batch_size=256, optimizer="sgd", lr=0.4, momentum=0.9,
                      weight_decay=5e-4, schedule="triangular", peak_epoch=5)
CIFAR_TRAIN = 50_000


def quiet(message):
    pass


def timed(function, device):
    """(wall seconds, CPU seconds of this process) that `function()` takes."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def sequential(model_config, x, y, recipe, seeds, device):
    for seed in seeds:
        model = build_model(model_config, tuple(x.shape[1:]), 10, seed)
        train_model(model, x, y, recipe, torch.Generator().manual_seed(seed + 1), device,
                    log=quiet)


def together(model_config, x, y, recipe, seeds, device):
    models = [build_model(model_config, tuple(x.shape[1:]), 10, seed) for seed in seeds]
    train_ensemble(models, x, y, [torch.arange(len(y))] * len(seeds), recipe,
                   [torch.Generator().manual_seed(seed + 1) for seed in seeds], device,
                   log=quiet)


def compare(label, model_config, x, y, recipe, n_sequential, n_ensemble, device):
    """Models/s sequential and ensemble (after one untimed warm-up of each); prints both."""
    sequential(model_config, x, y, recipe, [10_000], device)
    together(model_config, x, y, recipe, [10_000, 10_001], device)
    alone_wall, alone_cpu = timed(
        lambda: sequential(model_config, x, y, recipe, range(n_sequential), device), device)
    joint_wall, joint_cpu = timed(
        lambda: together(model_config, x, y, recipe, range(n_ensemble), device), device)
    alone, joint = n_sequential / alone_wall, n_ensemble / joint_wall
    print(f"{label}: sequential {alone:.2f} models/s ({alone_cpu / n_sequential:.3f} CPU-s/model)"
          f" | ensemble of {n_ensemble} {joint:.2f} models/s "
          f"({joint_cpu / n_ensemble:.3f} CPU-s/model) | ratio {joint / alone:.1f}x "
          f"(CPU time {alone_cpu / n_sequential / (joint_cpu / n_ensemble):.1f}x)", flush=True)
    return joint / alone


def mlp(arguments) -> float:
    config = load(REPOSITORY / "config.yaml")
    dataset = dataset_for(config, REPOSITORY)
    recipe = Recipe.from_config(config["train"])
    # As a job runs them: a shard's models, in CPU ensembles of at most CPU_MAX_MEMBERS.
    n_ensemble = arguments.mlp_models or min(config["models"]["seeds_per_job"],
                                             max_members(torch.device("cpu")))
    print(f"default MLP recipe: {recipe}, {dataset.n_train} training points")
    ratios = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        label = f"MLP, {threads} thread{'s' if threads > 1 else ''}"
        ratios[threads] = compare(label, config["model"], dataset.train_x, dataset.train_y,
                                  recipe, arguments.sequential_models, n_ensemble,
                                  torch.device("cpu"))
    return ratios


def cifar_shaped(n, device):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=generator)
    return x.to(device), torch.randint(0, 10, (n,), generator=generator).to(device)


def resnet9_cpu():
    torch.set_num_threads(2)
    x, y = cifar_shaped(128, torch.device("cpu"))
    recipe = Recipe(epochs=1, batch_size=32, lr=0.1, schedule="constant")  # 4 steps per model
    compare("ResNet-9 CPU smoke (128 images, batch 32, 1 epoch, 2 threads)", {"name": "resnet9"},
            x, y, recipe, 2, 4, torch.device("cpu"))


def resnet9_cuda(ensemble_sizes, steps):
    """ResNet-9s per GPU-hour at the paper recipe, from the time per step."""
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    steps_per_model = PAPER_RECIPE.epochs * -(-CIFAR_TRAIN // PAPER_RECIPE.batch_size)
    warm_up = 5
    # A recipe whose one epoch is `warm_up + steps` full batches: its per-step cost is
    # the paper recipe's (a constant rate only skips the schedule's arithmetic).
    x, y = cifar_shaped((warm_up + steps) * PAPER_RECIPE.batch_size, device)
    recipe = replace(PAPER_RECIPE, epochs=1, schedule="constant")
    print(f"{torch.cuda.get_device_name(device)}: paper recipe {PAPER_RECIPE}, "
          f"{steps_per_model} steps per model, timing {steps} steps after {warm_up}")

    def per_step(members):
        """Seconds per step and models per step; members 0 is the sequential path."""
        warm_x, warm_y = x[:warm_up * 256], y[:warm_up * 256]
        timed_x, timed_y = x[:steps * 256], y[:steps * 256]
        if members == 0:
            model = build_model({"name": "resnet9"}, (3, 32, 32), 10, 0)
            train_model(model, warm_x, warm_y, recipe, torch.Generator().manual_seed(0), device,
                        log=quiet)
            wall, _ = timed(lambda: train_model(model, timed_x, timed_y, recipe,
                                                torch.Generator().manual_seed(1), device,
                                                log=quiet), device)
            return wall / steps, 1
        models = [build_model({"name": "resnet9"}, (3, 32, 32), 10, seed)
                  for seed in range(members)]
        generators = [torch.Generator().manual_seed(seed) for seed in range(members)]
        train_ensemble(models, warm_x, warm_y, [torch.arange(len(warm_y))] * members, recipe,
                       generators, device, log=quiet)
        wall, _ = timed(lambda: train_ensemble(
            models, timed_x, timed_y, [torch.arange(len(timed_y))] * members, recipe, generators,
            device, log=quiet), device)
        return wall / steps, members

    results = {}
    for members in (0, *ensemble_sizes):
        try:
            seconds, count = per_step(members)
        except torch.OutOfMemoryError:
            print(f"ensemble of {members}: out of memory")
            torch.cuda.empty_cache()
            continue
        per_hour = 3600 * count / (seconds * steps_per_model)
        name = "sequential" if members == 0 else f"ensemble of {members}"
        results[name] = per_hour
        print(f"ResNet-9 CUDA {name}: {seconds * 1e3:.1f} ms per step, "
              f"{per_hour:.0f} models per GPU-hour ({per_hour / 60:.1f} per GPU-minute), "
              f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.empty_cache()
    if "sequential" in results and len(results) > 1:
        best = max((name for name in results if name != "sequential"), key=results.get)
        print(f"ResNet-9 CUDA best: {best}, {results[best] / results['sequential']:.1f}x "
              f"sequential; 2,300 models in {2300 / results[best]:.1f} GPU-hours")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential-models", type=int, default=5,
                        help="models timed one after another (default 5)")
    parser.add_argument("--mlp-models", type=int, default=None,
                        help="ensemble size for the MLP (default: models.seeds_per_job)")
    parser.add_argument("--cuda-ensembles", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--cuda-steps", type=int, default=20)
    arguments = parser.parse_args()
    load_average = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, device "
          f"{pick_device()}, load average {load_average[0]:.2f} {load_average[1]:.2f} "
          f"{load_average[2]:.2f} (a shared machine runs slower)", flush=True)
    ratios = mlp(arguments)
    resnet9_cpu()
    if torch.cuda.is_available():
        resnet9_cuda(arguments.cuda_ensembles, arguments.cuda_steps)
    else:
        print("ResNet-9 CUDA: no GPU here; skipped")
    load_average = os.getloadavg()
    print(f"load average at the end {load_average[0]:.2f} {load_average[1]:.2f} "
          f"{load_average[2]:.2f}")
    print(f"MLP ratio at 2 threads: {ratios[2]:.1f}x")
    print(f"ensemble speed-up: {ratios[1]:.1f}x")


if __name__ == "__main__":
    main()
