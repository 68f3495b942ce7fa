"""The fixed throughput matrix: kd crd dcd rrd x (resnet56->resnet20, resnet32x4->resnet8x4) x
(classic, fast) loader, plus fp32 vs autocast (kd) and NCHW vs channels_last (kd, crd) on the fast
loader; writes bench/RESULTS.md and bench/results.json.

    python bench/run_matrix.py [--device cpu|cuda|auto] [--steps N] [--quick] [--compile --channels_last]

Each cell is one `bench/throughput.py --compare...` process (fresh memory, its own loader workers)
in which the two variants run in interleaved rounds; see bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from report import BENCH, contention, machine_line, table, write_section
from throughput import wait_for_idle  # first: puts the repo root on sys.path

from helper.util import resolve_device  # noqa: E402

METHODS = ("kd", "crd", "dcd", "rrd")
PAIRS = (("resnet56", "resnet20"), ("resnet32x4", "resnet8x4"))
# (timed steps, warm-up steps) per variant on the CPU; the big pair is ~6x the FLOPs per image
CPU_STEPS = {"resnet56": (36, 5), "resnet32x4": (18, 4)}
GPU_STEPS = (150, 30)  # warm-up covers torch.compile
QUICK_STEPS = (6, 2)
# img/s of the reference implementation, fp32, 2-core CPU, unloaded (PERFORMANCE.md)
REFERENCE = {("resnet56", "resnet20"): {"kd": 420, "crd": 86, "dcd": 430, "rrd": 395},
             ("resnet32x4", "resnet8x4"): {"kd": 100, "crd": 51, "dcd": 98, "rrd": 97}}
GOALS = {"kd": 1.2, "crd": 3.0}  # on resnet56 -> resnet20, fp32, CPU
CHANNELS_LAST_CELLS = (("kd", PAIRS[0]), ("crd", PAIRS[0]), ("kd", PAIRS[1]))
PARTS = ("loader", "amp", "channels_last")
LOAD_HEADER = "load 1-min start -> end / others' CPU"
REFERENCE_CONV_GFLOPS = 390  # PERFORMANCE.md: a large oneDNN fp32 conv on the unloaded reference machine


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (default per pair)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps per variant (default per pair)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS[0]} steps, 2 rounds: a smoke run")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list (default: the fixed matrix)")
    parser.add_argument("--teachers", default=",".join(t for t, _ in PAIRS),
                        help="comma list of the pairs' teachers to run (default: both pairs)")
    parser.add_argument("--merge", action="store_true",
                        help="add the cells run now to <out>/results.json instead of replacing it")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="comma list of: loader (classic vs fast), amp (fp32 vs --amp_compare, kd), "
                             "channels_last (NCHW vs channels_last, kd and crd)")
    parser.add_argument("--amp_compare", choices=["bf16", "fp16"], default="bf16",
                        help="autocast dtype compared with fp32 for kd (fast loader)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--num_workers", type=int, default=None, help="classic loader workers (default min(8, cores))")
    parser.add_argument("--wait_idle", type=float, default=60.0,
                        help="before each cell wait up to this many seconds for other processes to go quiet")
    parser.add_argument("--idle_window", type=float, default=10.0,
                        help="seconds the other processes must stay quiet before a cell starts")
    parser.add_argument("--max_others", type=float, default=0.1,
                        help="re-run a cell when other processes took more than this share of the cores")
    parser.add_argument("--retries", type=int, default=2, help="re-runs allowed per disturbed cell")
    parser.add_argument("--out", default=str(BENCH), help="folder for RESULTS.md and results.json")
    parser.add_argument("--render", default=None, metavar="RESULTS_JSON",
                        help="only rewrite <out>/RESULTS.md from a saved results.json (no measuring)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 2
    return args


def steps_for(args: argparse.Namespace, teacher: str) -> tuple[int, int]:
    on_gpu = resolve_device(args.device).type == "cuda"
    default = QUICK_STEPS if args.quick else GPU_STEPS if on_gpu else CPU_STEPS[teacher]
    return (args.steps or default[0], args.warmup if args.warmup is not None else default[1])


def others_share(result: dict[str, Any]) -> float:
    """Share of the cores other processes used while a cell was timed (its most disturbed variant; 0 where
    unknown)."""
    return max(r.get("foreign_cpu_fraction") or 0.0 for r in result["records"])


def run_cell(args: argparse.Namespace, method: str, teacher: str, student: str, compare: list[str]) -> dict[str, Any]:
    """One `throughput.py` process, re-run (up to --retries times, after waiting for quiet) while other
    processes took more than --max_others of the cores; keeps the least disturbed attempt."""
    steps, warmup = steps_for(args, teacher)
    command = [sys.executable, str(BENCH / "throughput.py"), "--distill", method, "--model_t", teacher,
               "--model_s", student, "--steps", str(steps), "--warmup", str(warmup), "--rounds", str(args.rounds),
               "--device", args.device, *compare]
    command += ["--compile"] * args.compile + ["--channels_last"] * args.channels_last
    if args.num_workers is not None:
        command += ["--num_workers", str(args.num_workers)]
    attempts = []
    for _ in range(1 + args.retries):
        if args.wait_idle > 0:
            wait_for_idle(args.wait_idle, window_s=args.idle_window)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "cell.json"
            subprocess.run([*command, "--json-out", str(out)], check=True, stdout=subprocess.DEVNULL)
            result = json.loads(out.read_text())
        attempts.append(result)
        print(f"{method:4s} {teacher}->{student} {' '.join(compare)}: "
              + ", ".join(f"{r['label']} {r['images_per_s']} img/s" for r in result["records"])
              + f", ratio {result['ratio']['value']} ({time.perf_counter() - started:.0f}s, conv probe "
              f"{result['records'][0]['conv_ceiling_gflops']} GFLOP/s, load / others' CPU "
              f"{contention(*result['records'])})", file=sys.stderr, flush=True)
        if others_share(result) <= args.max_others:
            break
    best = min(attempts, key=others_share)
    return dict(best, method=method, pair=f"{teacher}->{student}", compare=compare, attempts=len(attempts))


def loader_table(cells: list[dict[str, Any]]) -> str:
    rows = []
    for cell in cells:
        classic, fast = cell["records"]
        rows.append([cell["method"], cell["pair"], f"{classic['images_per_s']:.0f}", f"{fast['images_per_s']:.0f}",
                     f"**{cell['ratio']['round_median']:.2f}** ({cell['ratio']['value']:.2f})",
                     f"{100 * classic['data_wait_fraction']:.1f} / {100 * fast['data_wait_fraction']:.1f}",
                     f"{classic['ms_per_step_median']:.0f} / {fast['ms_per_step_median']:.0f}",
                     f"{fast['peak_memory_mib']:.0f}", contention(classic, fast)])
    return table(["method", "pair", "img/s classic", "img/s fast", "fast/classic: round median (overall)",
                  "data wait % classic / fast", "ms/step classic / fast (median)", "peak mem fast (MiB)",
                  LOAD_HEADER], rows)


def variant_table(cells: list[dict[str, Any]]) -> str:
    """Two-variant comparisons on the fast loader (fp32 vs autocast, NCHW vs channels_last)."""
    rows = []
    for cell in cells:
        first, second = cell["records"]
        names = ["fp32" if r["label"] == "none" else r["label"] for r in (first, second)]
        rows.append([cell["method"], cell["pair"], " -> ".join(names),
                     f"{first['images_per_s']:.0f}", f"{second['images_per_s']:.0f}",
                     f"**{cell['ratio']['round_median']:.2f}** ({cell['ratio']['value']:.2f})",
                     f"{first['ms_per_step_median']:.0f} / {second['ms_per_step_median']:.0f}",
                     contention(first, second)])
    return table(["method", "pair", "variants (A -> B)", "img/s A", "img/s B", "B/A: round median (overall)",
                  "ms/step A / B (median)", LOAD_HEADER], rows)


def goals_text(cells: list[dict[str, Any]], variant_cells: list[dict[str, Any]]) -> str:
    """The 'Ratios vs goals' paragraph: fast-pipeline img/s over the reference's (PERFORMANCE.md), raw and
    scaled by how fast this machine's convolutions ran against PERFORMANCE.md's ~390 GFLOP/s."""
    lines = ["Goals (PERFORMANCE.md): kd >= 1.2x and crd >= 3x the reference implementation on "
             "resnet56 -> resnet20, fp32, CPU. Reference = the reference implementation (PERFORMANCE.md), "
             "measured on an unloaded machine of this type whose large fp32 convolutions ran at "
             f"~{REFERENCE_CONV_GFLOPS} GFLOP/s. Ours = this repo's fast pipeline, batch 64, fp32 (default NCHW; "
             "channels_last from the table above where measured), under the load shown, with the same "
             "large-convolution probe run just before each cell (`conv GFLOP/s`). On this shared VM the probe "
             f"reached about half of {REFERENCE_CONV_GFLOPS} even when no other process ran, so the raw ratios "
             f"compare unequal hardware; the scaled ratio multiplies the raw one by {REFERENCE_CONV_GFLOPS} / "
             "(our conv GFLOP/s), an estimate of the ratio on equal hardware that assumes step time scales with "
             "convolution speed. CRD here trains on 50,000 samples with nce_k 16384 (the CIFAR-100 setting); the "
             "reference figure used 3,200 samples, and our all-rows scoring costs more at 50,000 than at 3,200 "
             "samples, so this favours the reference.", "", ""]
    channels_last = {(c["method"], c["pair"]): c for c in variant_cells if "--compare_channels_last" in c["compare"]}
    rows = []
    for cell in cells:
        teacher, student = cell["pair"].split("->")
        reference = REFERENCE.get((teacher, student), {}).get(cell["method"])
        fast = cell["records"][1]
        if reference is None or fast["device_type"] != "cpu" or fast["amp"] != "none":
            continue
        ratio = fast["images_per_s"] / reference
        scaled = ratio * REFERENCE_CONV_GFLOPS / fast["conv_ceiling_gflops"]
        cl_cell = channels_last.get((cell["method"], cell["pair"]))
        cl_fast = None if cl_cell is None else cl_cell["records"][1]
        cl_scaled = None if cl_fast is None else (cl_fast["images_per_s"] / reference
                                                  * REFERENCE_CONV_GFLOPS / cl_fast["conv_ceiling_gflops"])
        goal = GOALS.get(cell["method"]) if teacher == "resnet56" else None
        verdict = ""
        if goal is not None:
            if ratio >= goal:
                verdict = "met"
            elif scaled >= goal:
                verdict = "met when scaled"
            elif (cl_scaled or 0.0) >= goal:
                verdict = "met when scaled, with channels_last"
            else:
                verdict = "not met"
            verdict = f">= {goal}x: {verdict}"
        rows.append([cell["method"], cell["pair"], reference, f"{fast['images_per_s']:.0f}", f"{ratio:.2f}x",
                     f"{fast['conv_ceiling_gflops']:.0f}", f"**{scaled:.2f}x**",
                     "-" if cl_scaled is None else f"**{cl_scaled:.2f}x**", verdict, contention(fast)])
    return "\n".join(lines) + table(["method", "pair", "reference img/s (PERFORMANCE.md)", "ours fast img/s",
                                     "ours / reference", "conv GFLOP/s here", "scaled ratio",
                                     "scaled ratio, channels_last", "goal", LOAD_HEADER], rows)


def write_report(out: Path, loader_cells: list[dict[str, Any]], variant_cells: list[dict[str, Any]],
                 seconds: float, policy: dict[str, float]) -> None:
    first = (loader_cells or variant_cells)[0]["records"][0]
    settings = (f"Generated CIFAR-100 in the official format ({first['n_train']:,} training images), random-init "
                f"teachers, batch {first['batch_size']}, fp32 unless noted, classic loader with "
                f"{first['num_workers']} workers, nce_k {first['nce_k']}, compile {first['compile']}, channels_last "
                f"{first['channels_last']}. Per cell: {first['warmup']} warm-up steps per variant, then "
                f"{first['steps']} timed steps per variant in {first['rounds']} interleaved rounds (classic, fast, "
                f"classic, fast, ...) in one process; each classic round first drains the workers' prefetch queue "
                f"untimed. img/s = images / wall time of the timed rounds; ratios in bold are the median of the "
                f"per-round ratios (robust to a burst of foreign load in one round), in parentheses the ratio of the "
                f"overall img/s. Data wait = time blocked in `next(batches)` (the fast loader's batched augmentation "
                f"runs there too). Peak memory = {first['peak_memory_kind']}. Before each cell the runner waits up to "
                f"{policy['wait_idle']:.0f} s for other processes to go quiet, and each cell starts with a probe of "
                f"the large-convolution speed (`conv_ceiling_gflops`); a cell "
                f"in which other processes took more than {100 * policy['max_others']:.0f}% of the cores is re-run "
                f"(at most {policy['retries']} times) and the least disturbed attempt is kept. The 1-minute load "
                f"includes the benchmark's own threads and workers; 'others' CPU' does not. Whole matrix, waits "
                f"and re-runs included: {seconds / 60:.1f} min.")
    records = [record for cell in loader_cells + variant_cells for record in cell["records"]]
    text = ["## Throughput matrix (`bench/run_matrix.py`)", "", machine_line(*records), "", settings, ""]
    if loader_cells:
        text += [loader_table(loader_cells)]
    if variant_cells:
        text += ["### Precision and memory format (fast loader, both variants in one process, interleaved)", "",
                 variant_table(variant_cells)]
    text += ["### Ratios vs goals", "", goals_text(loader_cells, variant_cells)]
    write_section("matrix", "\n".join(text), out / "RESULTS.md")


def merge(saved: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Saved cells updated by the new ones (same method, pair and comparison), in matrix order."""
    def key(cell: dict[str, Any]) -> tuple[str, str, str]:
        return cell["method"], cell["pair"], " ".join(cell["compare"])

    cells = {key(cell): cell for cell in saved + new}
    rank = {f"{t}->{s}": i for i, (t, s) in enumerate(PAIRS)}
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(cells.values(), key=lambda c: (key(c)[2], rank.get(c["pair"], 99), order.get(c["method"], 99)))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        write_report(out, saved["loader_cells"], saved["variant_cells"], saved["seconds"], saved["policy"])
        return
    started = time.perf_counter()
    methods = [m for m in args.methods.split(",") if m]
    pairs = [(teacher, student) for teacher, student in PAIRS if teacher in args.teachers.split(",")]
    parts = set(args.parts.split(","))
    loader_cells = [run_cell(args, method, teacher, student, ["--compare"])
                    for teacher, student in pairs for method in methods] if "loader" in parts else []
    variant_cells = [run_cell(args, "kd", teacher, student, ["--compare_amp", args.amp_compare, "--loader", "fast"])
                     for teacher, student in pairs if "kd" in methods] if "amp" in parts else []
    if "channels_last" in parts and not args.channels_last:
        variant_cells += [run_cell(args, method, *pair, ["--compare_channels_last", "--loader", "fast"])
                          for method, pair in CHANNELS_LAST_CELLS if pair in pairs and method in methods]
    seconds = time.perf_counter() - started
    policy = {"wait_idle": args.wait_idle, "max_others": args.max_others, "retries": args.retries}
    if args.merge and (out / "results.json").exists():
        saved = json.loads((out / "results.json").read_text())
        loader_cells = merge(saved["loader_cells"], loader_cells)
        variant_cells = merge(saved["variant_cells"], variant_cells)
        seconds += saved["seconds"]
    (out / "results.json").write_text(json.dumps({"loader_cells": loader_cells, "variant_cells": variant_cells,
                                                  "seconds": round(seconds, 1), "policy": policy}, indent=1) + "\n")
    write_report(out, loader_cells, variant_cells, seconds, policy)
    print(f"wrote {out / 'RESULTS.md'} and {out / 'results.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
