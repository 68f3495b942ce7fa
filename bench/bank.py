"""Teacher bank: what building it costs against the teacher's share of training, and what a step
gains by reading it. Writes the "bank" section of bench/RESULTS.md.

    python bench/bank.py [--device cpu] [--quick] [--sweep]

1. Build rate: ``dataset.teacher_bank.chunk_outputs`` (the build's own code: all 162 views of a
   few images through the teacher as train_student builds a bank: BatchNorm folded, compiled as
   --compile auto does for a 240-epoch run, 64 views per forward on a CPU) against the teacher forward of a
   training step (batch 64, folded and compiled alike),
   images per second each, interleaved. Building a CIFAR-100 bank = 162 x 50,000 views; the
   teacher's time in one 240-epoch run = 240 x 50,000 forwards.
2. Steps: bench/throughput.py's 'default' and 'bank' configurations side by side (the bank of the
   full 50,000-image split, memory-mapped, with placeholder values: a step's cost does not depend on
   them), for the cells of the targets and the logit methods of a table sweep.
3. Sweep: METHODS="kd dkd dist ctkd wttm" TRIALS=3 on resnet32x4 -> resnet8x4, 240 epochs,
   extrapolated from the measured step and build rates (one bank built once, 15 runs read it).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402  (puts the repo and tests/ on sys.path)
from report import machine_line, table, write_section  # noqa: E402

import train_student  # noqa: E402
from dataset.build import build_data  # noqa: E402
from dataset.teacher_bank import BUILD_BATCH, VIEWS_PER_IMAGE, chunk_outputs  # noqa: E402
from helper.runner import setup  # noqa: E402

EPOCHS, N_TRAIN = 240, 50_000
STEP_CELLS = [("kd", "resnet32x4", "resnet8x4"), ("dkd", "resnet32x4", "resnet8x4"),
              ("crd", "resnet56", "resnet20"), ("kd", "resnet56", "resnet20")]
SWEEP_METHODS = ("kd", "dkd", "dist", "ctkd", "wttm")
TARGETS = {("kd", "resnet32x4"): 2.5, ("dkd", "resnet32x4"): 2.5}


def build_rate(arch: str, device: torch.device, images: int, rounds: int, compile: str = "auto",
               n_train: int = 2_000) -> dict[str, float]:
    """Images/s of the bank build and of a training step's teacher forward, interleaved rounds."""
    argv = throughput.student_argv(argparse.Namespace(
        model_t=arch, distill="kd", model_s="resnet8", batch_size=64, n_train=n_train, device=str(device),
        loader="fast", amp="none", channels_last="auto", compile=compile, epochs=EPOCHS, num_workers=0,
        nce_k=16384), {})
    opt = train_student.parse_args(argv)
    setup(opt)
    torch._dynamo.reset()  # one process times several teachers: each compiles afresh, as in its own run
    data, loader, _ = build_data(opt, device)
    _, teacher, _ = train_student.build_models(opt, data, device)
    step_teacher = train_student.teacher_for_forward(teacher, opt, device)  # folded, compiled with --compile
    build_teacher = step_teacher  # train_student builds a bank with this same teacher_for_forward copy
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (data.mean, data.std))
    batch = next(iter(loader.iterate(1)))[0]
    split = data.train_images[:images].to(device)
    timings: dict[str, list[float]] = {"build": [], "step_teacher": []}
    for round_index in range(rounds + 1):  # round 0 warms up (and compiles)
        started = time.perf_counter()
        chunk_outputs(build_teacher, split, ("logits",), mean, std, opt.channels_last, BUILD_BATCH[device.type])
        build = images * VIEWS_PER_IMAGE / (time.perf_counter() - started)
        started = time.perf_counter()
        with torch.no_grad():
            for _ in range(max(1, images * VIEWS_PER_IMAGE // 64 // 4)):
                step_teacher(batch)
        throughput.synchronize(device)
        forward = max(1, images * VIEWS_PER_IMAGE // 64 // 4) * 64 / (time.perf_counter() - started)
        if round_index:
            timings["build"].append(build)
            timings["step_teacher"].append(forward)
    build, forward = statistics.median(timings["build"]), statistics.median(timings["step_teacher"])
    return {"build_img_s": round(build, 1), "step_teacher_img_s": round(forward, 1),
            "build_hours": round(N_TRAIN * VIEWS_PER_IMAGE / build / 3600, 2),
            "teacher_hours_240": round(EPOCHS * N_TRAIN / forward / 3600, 2),
            "ratio": round((N_TRAIN * VIEWS_PER_IMAGE / build) / (EPOCHS * N_TRAIN / forward), 3),
            "compile": bool(opt.compile)}


def step_speeds(method: str, teacher: str, student: str, args: argparse.Namespace) -> dict[str, Any]:
    """bench/throughput.py's default and bank configurations of one cell, interleaved, in a process of
    their own (torch.compile's caches of one cell never reach the next)."""
    steps, warmup = (4, 2) if args.quick else throughput_steps(teacher)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "cell.json"
        subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "throughput.py"), "--distill", method,
                        "--model_t", teacher, "--model_s", student, "--device", args.device, "--configs",
                        "default,bank", "--steps", str(steps), "--warmup", str(warmup), "--n_train",
                        str(args.n_train), "--json-out", str(out)], check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def throughput_steps(teacher: str) -> tuple[int, int]:
    return (24, 4) if teacher == "resnet32x4" else (48, 6)


def sweep_estimate(speeds: dict[str, dict[str, float]], build_hours: float) -> dict[str, float]:
    """Hours of METHODS="kd dkd dist ctkd wttm" TRIALS=3 at 240 epochs, without and with the bank."""
    epoch_hours = {config: sum(3 * EPOCHS * N_TRAIN / speeds[m][config] for m in SWEEP_METHODS) / 3600
                   for config in ("default", "bank")}
    with_bank = epoch_hours["bank"] + build_hours
    return {"without_h": round(epoch_hours["default"], 1), "with_h": round(with_bank, 1),
            "build_h": round(build_hours, 1), "ratio": round(epoch_hours["default"] / with_bank, 2)}


def report(builds: dict[str, dict[str, float]], cells: list[dict[str, Any]], sweep: dict[str, float] | None,
           records: list[dict[str, Any]]) -> str:
    """The RESULTS.md section."""
    build_rows = [[arch, b["build_img_s"], b["step_teacher_img_s"], b["build_hours"], b["teacher_hours_240"],
                   f"**{b['ratio']:.2f}x**", "<= 0.7x " + ("met" if b["ratio"] <= 0.7 else "NOT met")]
                  for arch, b in builds.items()]
    step_rows = []
    for cell in cells:
        default, bank = cell["records"]
        target = TARGETS.get((default["method"], default["pair"].split("->")[0]))
        ratio = cell["ratios"]["bank"]["value"]
        step_rows.append([default["method"], default["pair"], default["images_per_s"], bank["images_per_s"],
                          f"**{ratio:.2f}x** (rounds: {cell['ratios']['bank']['round_median']:.2f}x)",
                          f">= {target}x " + ("met" if ratio >= target else "NOT met") if target else "-"])
    lines = ["## Teacher bank", "", machine_line(*records), "",
             "Build (`dataset/teacher_bank.py`'s code, 162 views of a few images at the build batch (64 on a CPU), the teacher folded "
             "and compiled as a run builds it) "
             "against the teacher forward of a training step (batch 64, folded, `--compile auto` for 240 epochs), "
             "interleaved; hours for the 50,000-image CIFAR-100 split:", "",
             table(["teacher", "build img/s", "step teacher img/s", "build h", "teacher h in 240 epochs",
                    "build / teacher time", "target"], build_rows), "",
             "Training steps, `bench/throughput.py --configs default,bank` (fp32, defaults; the bank of the full "
             "split with placeholder values):", "",
             table(["method", "pair", "default img/s", "bank img/s", "bank / default", "target"], step_rows)]
    if sweep:
        lines += ["", f"Sweep `METHODS=\"{' '.join(SWEEP_METHODS)}\" TRIALS=3`, resnet32x4 -> resnet8x4, 240 epochs "
                  f"(extrapolated from the measured rates): {sweep['without_h']} h without the bank, "
                  f"{sweep['with_h']} h with it ({sweep['build_h']} h of it building the bank once): "
                  f"**{sweep['ratio']:.2f}x** end to end (target >= 2x: {'met' if sweep['ratio'] >= 2 else 'NOT met'})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="few steps and images: a smoke run, not a measurement")
    parser.add_argument("--n_train", type=int, default=N_TRAIN)
    parser.add_argument("--sweep", action="store_true", help="also time every method of the sweep estimate")
    parser.add_argument("--no_write", action="store_true", help="print, do not rewrite bench/RESULTS.md")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    builds = {arch: build_rate(arch, device, 2 if args.quick else 4, 1 if args.quick else 3)
              for arch in ("resnet32x4", "resnet56")}
    print(json.dumps(builds), flush=True)
    cells = [*STEP_CELLS, *((m, "resnet32x4", "resnet8x4") for m in SWEEP_METHODS[2:] if args.sweep)]
    results = [step_speeds(method, teacher, student, args) for method, teacher, student in cells]
    for result in results:
        print(json.dumps(result["ratios"]), flush=True)
    speeds = {r["records"][0]["method"]: {rec["label"]: rec["images_per_s"] for rec in r["records"]}
              for r in results if r["records"][0]["pair"] == "resnet32x4->resnet8x4"}
    sweep = sweep_estimate(speeds, builds["resnet32x4"]["build_hours"]) if set(SWEEP_METHODS) <= set(speeds) else None
    text = report(builds, results, sweep, [rec for r in results for rec in r["records"]])
    print(text)
    if not args.no_write and not args.quick:
        write_section("bank", text)


if __name__ == "__main__":
    main()
