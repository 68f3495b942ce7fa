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

from training import student as train_student  # noqa: E402
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
                        str(args.n_train), "--rounds", "2" if args.quick else "5", "--json-out", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def throughput_steps(teacher: str) -> tuple[int, int]:
    return (30, 4) if teacher == "resnet32x4" else (60, 6)


def sweep_estimate(ratios: dict[str, float], build_ratio: float) -> dict[str, float]:
    """METHODS="kd dkd dist ctkd wttm" TRIALS=3 at 240 epochs, in units of one default run (these logit
    methods' steps cost alike: same networks, another loss), from load-robust ratios only: each method's
    bank/default step ratio r, and the build's cost relative to the teacher time of one run. The
    teacher's share of a default step follows from kd's ratio (the bank removes exactly it):
    share = 1 - 1/r_kd, so building costs build_ratio * share default runs."""
    without = 3 * len(SWEEP_METHODS)
    build = build_ratio * (1 - 1 / ratios["kd"])
    with_bank = 3 * sum(1 / ratios[m] for m in SWEEP_METHODS) + build
    return {"without_runs": without, "with_runs": round(with_bank, 2), "build_runs": round(build, 2),
            "ratio": round(without / with_bank, 2)}


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
        ratio = cell["ratios"]["bank"]["round_median"]  # robust to a round that a neighbour's load slowed
        step_rows.append([default["method"], default["pair"], default["images_per_s"], bank["images_per_s"],
                          f"**{ratio:.2f}x** (overall {cell['ratios']['bank']['value']:.2f}x)",
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
             table(["method", "pair", "default img/s", "bank img/s", "bank / default: median of 5 interleaved rounds",
                    "target"], step_rows)]
    if sweep:
        lines += ["", f"Sweep `METHODS=\"{' '.join(SWEEP_METHODS)}\" TRIALS=3`, resnet32x4 -> resnet8x4, 240 epochs, "
                  "extrapolated from the ratios above (in default-run units: each method's step ratio, the build "
                  "against one run's teacher time, the teacher's share of a step = 1 - 1/(kd's ratio)): "
                  f"{sweep['without_runs']} runs' time without the bank, {sweep['with_runs']} with it (of which "
                  f"{sweep['build_runs']} building it once): **{sweep['ratio']:.2f}x** end to end (target >= 2x: "
                  f"{'met' if sweep['ratio'] >= 2 else 'NOT met'})."]
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
    builds = {arch: build_rate(arch, device, 2 if args.quick else 32, 1 if args.quick else 2)  # 32 x 162 = 81 x 64
              for arch in ("resnet32x4", "resnet56")}
    print(json.dumps(builds), flush=True)
    cells = [*STEP_CELLS, *((m, "resnet32x4", "resnet8x4") for m in SWEEP_METHODS[2:] if args.sweep)]
    results = [step_speeds(method, teacher, student, args) for method, teacher, student in cells]
    for result in results:
        print(json.dumps(result["ratios"]), flush=True)
    ratios = {r["records"][0]["method"]: r["ratios"]["bank"]["round_median"]
              for r in results if r["records"][0]["pair"] == "resnet32x4->resnet8x4"}
    sweep = sweep_estimate(ratios, builds["resnet32x4"]["ratio"]) if set(SWEEP_METHODS) <= set(ratios) else None
    text = report(builds, results, sweep, [rec for r in results for rec in r["records"]])
    print(text)
    if not args.no_write and not args.quick:
        write_section("bank", text)


if __name__ == "__main__":
    main()
