"""Where the time of one training step goes: torch.profiler over a few steps of one configuration.

    python bench/profile_step.py --distill kd --model_t resnet56 --model_s resnet20 --config default \
        --device cpu --steps 5 --warmup 3 [--rows 20]

Builds the step as bench/throughput.py does (train_student.py's own code), warms it up (compiling,
if the configuration compiles), then profiles ``--steps`` steps. Prints the share of the step spent
in each phase (data, student forward, teacher forward, losses, backward, optimizer, after-step
hook, meters), measured with ``torch.profiler.record_function`` ranges around them, then the top
operators by self time.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

import throughput  # first: puts the repo root on sys.path

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

PHASES = ("data", "student forward", "teacher forward", "method loss", "backward", "optimizer", "after step",
          "meters")


class Ranged:
    """A module (or function) whose calls run inside a record_function range; attributes pass through."""

    def __init__(self, name: str, target: Any) -> None:
        self._name, self._target = name, target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with record_function(self._name):
            return self._target(*args, **kwargs)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._target, attribute)


def label_phases(variant: throughput.Variant) -> None:
    """Wrap the variant's pieces in record_function ranges (profiling only; the step itself is unchanged)."""
    task = variant.task
    task.model, task.teacher = Ranged("student forward", task.model), Ranged("teacher forward", task.teacher)
    task.method.loss = Ranged("method loss", task.method.loss)
    variant.optimizer.step = Ranged("optimizer", variant.optimizer.step)
    task.after_step = Ranged("after step", task.after_step)
    variant.meters.update = Ranged("meters", variant.meters.update)
    batches = Ranged("data", variant.batches.__next__)
    variant.batches = iter(batches, None)
    original_backward = torch.Tensor.backward

    def backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        with record_function("backward"):
            original_backward(self, *args, **kwargs)

    torch.Tensor.backward = backward


def phase_table(events: Any, steps: int) -> str:
    """ms per step in each labelled phase (CPU time of its range) and the rest of the step (CE, KD, glue)."""
    times = {event.key: event.cpu_time_total / 1000 / steps for event in events}
    step = times.get("step", 0.0)
    rows = [(name, times.get(name, 0.0)) for name in PHASES]
    rows.append(("rest (CE, KD, zero_grad, glue)", step - sum(ms for _, ms in rows)))
    lines = ["| phase | ms/step | share |", "|---|---|---|"]
    lines += [f"| {name} | {ms:.1f} | {100 * ms / max(step, 1e-9):.0f}% |" for name, ms in rows]
    return "\n".join(lines + [f"| step | {step:.1f} | 100% |"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distill", default="kd")
    parser.add_argument("--model_t", default="resnet56")
    parser.add_argument("--model_s", default="resnet20")
    parser.add_argument("--config", default="default", help="a bench/throughput.py configuration")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--nce_k", type=int, default=16384)
    parser.add_argument("--n_train", type=int, default=throughput.DEFAULT_N_TRAIN)
    args = parser.parse_args(argv)
    bench_args = throughput.parse_args(["--distill", args.distill, "--model_t", args.model_t, "--model_s",
                                        args.model_s, "--device", args.device, "--nce_k", str(args.nce_k),
                                        "--n_train", str(args.n_train), "--configs", args.config])
    variant = throughput.build_variant(bench_args, args.config, {})
    for _ in range(args.warmup):
        variant.step()
    label_phases(variant)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if variant.device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(args.steps):
            with record_function("step"):
                variant.step()
        throughput.synchronize(variant.device)
    settings = variant.settings
    print(f"{settings['method']} {settings['pair']} config {args.config}: channels_last {settings['channels_last']}, "
          f"compile {settings['compile']}, amp {settings['amp']}, {settings['device']}, {settings['threads']} threads, "
          f"load {throughput.load_average()}")
    events = profiler.key_averages()
    print(phase_table(events, args.steps))
    sort = "self_cuda_time_total" if variant.device.type == "cuda" else "self_cpu_time_total"
    with contextlib.redirect_stdout(sys.stdout):
        print(events.table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
