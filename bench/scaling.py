"""How the cost scales: step time vs batch size (kd), vs nce_k (crd, rrd), and CRD memory banks.

    python bench/scaling.py [--device cpu|cuda|auto] [--quick] [--skip batch,nce_k,crd_loss,banks]

Writes the "Scale of cost" section of bench/RESULTS.md and bench/scaling.json. Full training
steps go through bench/throughput.py (train_student.py's own code path, fast loader,
resnet56 -> resnet20, fp32), with every configuration of a sweep interleaved in one process.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

import throughput  # first: puts the repo root on sys.path
from crd.criterion import CRDLoss
from crd.memory import BANK_DTYPES, ContrastMemory, ContrastSampler, bank_bytes
from helper.util import resolve_device
from report import BENCH, contention, machine_line, table, write_section

BATCH_SIZES = (32, 64, 128, 256, 512)
NCE_KS = (4096, 16384, 65536)
CIFAR_N, BIG_N, IMAGENET_N = 50_000, 100_000, 1_281_167
FEAT_DIM, BATCH = 128, 64
PART_NAMES = ("batch", "nce_k", "crd_loss", "scoring", "banks")


def bench_args(*extra: str, device: str) -> argparse.Namespace:
    """throughput.py's options for kd-style runs on resnet56 -> resnet20 with the fast loader, eager
    (--compile off: one compile per configuration would dominate these sweeps)."""
    return throughput.parse_args(["--model_t", "resnet56", "--model_s", "resnet20", "--loader", "fast",
                                  "--compile", "off", "--device", device, *extra])


def batch_size_sweep(device: str, quick: bool) -> list[dict[str, Any]]:
    """kd step time at each batch size; about the same number of images per batch size."""
    shared: dict[Any, Any] = {}
    variants = []
    for size in BATCH_SIZES:
        variant = throughput.build_variant(bench_args("--distill", "kd", "--batch_size", str(size), device=device),
                                           "default", shared)
        variant.label = f"b{size}"
        variants.append(variant)
    images = 512 if quick else 2048
    steps = {v.label: max(2 if quick else 4, images // v.batch_size) for v in variants}
    return throughput.measure(variants, steps, warmup=1 if quick else 2, rounds=2)


def nce_k_configs(quick: bool) -> list[tuple[str, int, int]]:
    """(method, n_train, nce_k): a kd baseline; crd at 50,000 samples (nce_k <= 16384) and at 100,000 (all
    nce_k, since 65536 needs more negatives than CIFAR-100 has); rrd (its queue ignores the dataset size)."""
    if quick:
        return [("kd", CIFAR_N, 16384), ("crd", CIFAR_N, 4096), ("rrd", CIFAR_N, 4096)]
    configs = [("kd", CIFAR_N, 16384)]
    configs += [("crd", CIFAR_N, k) for k in NCE_KS[:2]] + [("crd", BIG_N, k) for k in NCE_KS]
    return configs + [("rrd", CIFAR_N, k) for k in NCE_KS]


def nce_k_sweep(device: str, quick: bool) -> list[dict[str, Any]]:
    """Full training steps of crd and rrd at each nce_k (one model set per configuration, interleaved)."""
    variants = []
    for method, n_train, nce_k in nce_k_configs(quick):
        args = bench_args("--distill", method, "--nce_k", str(nce_k), "--n_train", str(n_train), device=device)
        variant = throughput.build_variant(args, "default", {})
        variant.label = f"{method}/n{n_train}/k{nce_k}"
        variants.append(variant)
    return throughput.measure(variants, 3 if quick else 10, warmup=1 if quick else 2, rounds=2)


def median_ms(function: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Median wall time of ``function`` in ms (one warm-up call; device synchronised around each call)."""
    function()
    times = []
    for _ in range(repeats):
        throughput.synchronize(device)
        started = time.perf_counter()
        function()
        throughput.synchronize(device)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def crd_configs(quick: bool) -> list[tuple[int, int]]:
    """(n_data, nce_k) pairs for the CRD-loss measurements."""
    if quick:
        return [(CIFAR_N, NCE_KS[0])]
    return [(n_data, nce_k) for n_data in (CIFAR_N, BIG_N) for nce_k in NCE_KS if nce_k < n_data - n_data // 100]


def crd_loss_step(n_data: int, nce_k: int, device: torch.device) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(sampler draw, CRDLoss forward + backward) on synthetic 64-d features (resnet20/56's pooled size)."""
    labels = torch.arange(n_data, device=device) % 100
    opt = argparse.Namespace(s_dim=64, t_dim=64, feat_dim=FEAT_DIM, n_data=n_data, nce_k=nce_k, nce_t=0.07, nce_m=0.5)
    criterion = CRDLoss(opt).to(device)
    sampler = ContrastSampler(labels, nce_k, "exact", device)
    student = torch.randn(BATCH, 64, device=device, requires_grad=True)
    teacher = torch.randn(BATCH, 64, device=device)
    index = torch.randperm(n_data, device=device)[:BATCH]
    contrast = sampler(index, labels[index])
    return (lambda: sampler(index, labels[index]),
            lambda: criterion(student, teacher, index, contrast).backward())


def crd_loss_cost(device_name: str, quick: bool) -> list[dict[str, Any]]:
    """Time CRD's own work: the sampler, then CRDLoss forward + backward (both banks, momentum update)."""
    device = resolve_device(device_name)
    rows = []
    for n_data, nce_k in crd_configs(quick):
        sample, loss_step = crd_loss_step(n_data, nce_k, device)
        repeats = 3 if quick else 10
        rows.append({"n_data": n_data, "nce_k": nce_k, "sampler_ms": round(median_ms(sample, repeats, device), 2),
                     "loss_fwd_bwd_ms": round(median_ms(loss_step, repeats, device), 2),
                     "loadavg": throughput.load_average()})
    return rows


def scoring_strategies(device_name: str, quick: bool) -> list[dict[str, Any]]:
    """One bank, forward + backward: all-rows scoring as crd/memory.py does it (bank snapshot, (B x D) @
    (D x n_data), gather) vs gathering the B x (K+1) x D sampled rows and a bmm (the reference's way)."""
    device = resolve_device(device_name)
    rows = []
    for n_data in (CIFAR_N,) if quick else (CIFAR_N, BIG_N):
        bank = torch.rand(n_data, FEAT_DIM, device=device)
        embeddings = torch.randn(BATCH, FEAT_DIM, device=device, requires_grad=True)
        contrast = torch.randint(n_data, (BATCH, 16385), device=device)

        def all_rows() -> None:
            scores = (embeddings @ bank.clone().t()).gather(1, contrast)
            scores.div(0.07).exp().sum().backward()

        def gathered() -> None:
            weights = bank.index_select(0, contrast.view(-1)).view(BATCH, -1, FEAT_DIM)
            torch.bmm(weights, embeddings.unsqueeze(2)).div(0.07).exp().sum().backward()

        repeats = 2 if quick else 5
        rows.append({"n_data": n_data, "nce_k": 16384, "all_rows_ms": round(median_ms(all_rows, repeats, device), 1),
                     "gathered_ms": round(median_ms(gathered, repeats, device), 1),
                     "loadavg": throughput.load_average()})
    return rows


def rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_probe(quick: bool) -> dict[str, Any]:
    """CPU memory of the CRD banks and of one CRDLoss step, as RSS. Run in a fresh process with a fixed
    malloc mmap threshold, so that every tensor is its own mapping and RSS follows live tensors."""
    banks = {}
    for name in BANK_DTYPES:
        before = rss_mib()
        bank = ContrastMemory(FEAT_DIM, CIFAR_N, 16384, bank_dtype=name)
        banks[name] = {"nbytes_mib": round((bank.memory_v1.nbytes + bank.memory_v2.nbytes) / 2**20, 1),
                       "rss_delta_mib": round(rss_mib() - before, 1)}
        del bank
    transient = []
    for n_data, nce_k in crd_configs(quick):
        _, loss_step = crd_loss_step(n_data, nce_k, torch.device("cpu"))
        loss_step()
        steady = rss_mib()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            continue
        loss_step()
        transient.append({"n_data": n_data, "nce_k": nce_k, "transient_peak_mib": round(rss_mib("VmHWM") - steady, 1)})
    return {"banks": banks, "crd_transient": transient}


def run_memory_probe(quick: bool) -> dict[str, Any]:
    """memory_probe() in a subprocess (MALLOC_MMAP_THRESHOLD_ fixed at 128 KiB)."""
    command = [sys.executable, __file__, "--memory_probe"] + ["--quick"] * quick
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(128 * 1024))
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def bank_footprint(probe: dict[str, Any]) -> list[dict[str, Any]]:
    """Both CRD banks (n_data x 128) per dtype: computed for CIFAR-100 and ImageNet, measured for CIFAR-100."""
    rows = []
    for n_data in (CIFAR_N, IMAGENET_N):
        for name in BANK_DTYPES:
            computed = bank_bytes(n_data, FEAT_DIM, name)
            row = {"n_data": n_data, "dtype": name, "computed_mib": round(computed / 2**20, 1)}
            if n_data == CIFAR_N:
                row.update(probe["banks"][name])
            rows.append(row)
    return rows


def crd_step_model(n_data: int, nce_k: int) -> dict[str, float]:
    """Per-step work of the two ways to score CRD's sampled rows (both banks, B=64, D=128, fp32):
    all-rows (this repo: (B x D) @ (D x n) then gather) vs gathering B x (K+1) x D rows (reference)."""
    all_rows_gflop = 2 * 2 * (2 * BATCH * FEAT_DIM * n_data) / 1e9  # two banks x (forward + backward matmul)
    all_rows_mib = 2 * (n_data * FEAT_DIM * 4 + 2 * BATCH * n_data * 4) / 2**20  # per bank: snapshot, scores, grad
    gathered_mib = 2 * BATCH * (nce_k + 1) * FEAT_DIM * 4 / 2**20
    gather_gflop = 2 * 2 * (2 * BATCH * (nce_k + 1) * FEAT_DIM) / 1e9
    return {"all_rows_gflop": round(all_rows_gflop, 2), "all_rows_transient_mib": round(all_rows_mib, 0),
            "gather_gflop": round(gather_gflop, 2), "gather_tensor_mib": round(gathered_mib, 0)}


def records_table(records: list[dict[str, Any]], first: str) -> str:
    rows = [[r["label"] if first == "label" else r[first], f"{r['ms_per_step_median']:.0f}",
             f"{r['ms_per_step_median'] / r['batch_size']:.2f}", f"{r['images_per_s']:.0f}",
             f"{r['peak_memory_mib']:.0f}"] for r in records]
    return table([first.replace("label", "method/n_train/nce_k"), "ms/step (median)", "ms/image", "img/s",
                  "peak mem (MiB)"], rows)


def crossover_text(row: dict[str, Any]) -> str:
    """Where all-rows scoring (linear in n_data) stops beating gathered rows (flat in n_data)."""
    crossover = row["n_data"] * row["gathered_ms"] / row["all_rows_ms"]
    imagenet_all_rows = row["all_rows_ms"] * IMAGENET_N / row["n_data"]
    memory = crd_step_model(IMAGENET_N, row["nce_k"])
    return (f"Extrapolating from n_data {row['n_data']:,} (all-rows linear in n_data, gathering flat), the two cross "
            f"near n_data ~ {crossover:,.0f} at nce_k {row['nce_k']} on this machine: CIFAR-100 is well inside "
            f"all-rows territory, while for ImageNet ({IMAGENET_N:,} samples) all-rows would take ~"
            f"{imagenet_all_rows:,.0f} ms per bank against ~{row['gathered_ms']:,.0f} ms gathered, and "
            f"{memory['all_rows_transient_mib'] / memory['gather_tensor_mib']:.1f}x the transient memory (computed "
            "table above).")


def write_report(results: dict[str, Any], path: Path) -> None:
    sweep_records = [*(results.get("batch") or []), *(results.get("nce_k") or [])]
    text = ["## Scale of cost (`bench/scaling.py`)", ""]
    if sweep_records:
        text += [machine_line(*sweep_records), "",
                 "Full training steps (train_step, fast loader, fp32, resnet56 -> resnet20), each sweep's "
                 "configurations interleaved in one process (2 rounds). Load 1-min start -> end / share of the cores "
                 "other processes used: "
                 + ", ".join(f"{name} sweep {contention(*records)}" for name, records in
                             (("batch", results.get("batch")), ("nce_k", results.get("nce_k"))) if records)
                 + ". Peak memory is the whole process's, with every configuration of the sweep loaded. "
                 "Large-convolution probe at the start of each sweep (see the matrix section): "
                 + ", ".join(f"{records[0].get('conv_ceiling_gflops', 'n/a')} GFLOP/s" for records in
                             (results.get("batch"), results.get("nce_k")) if records) + ".", ""]
    if results.get("batch"):
        text += ["### kd: step time vs batch size", "", records_table(results["batch"], "batch_size")]
    if results.get("nce_k"):
        text += ["### crd and rrd: step time vs nce_k", "",
                 "Measured as full training steps on generated data: nce_k 65536 needs more than 65,536 + class-size "
                 "samples of other classes, so crd runs on 50,000 samples (the CIFAR-100 size) and on a generated "
                 "100,000-sample set (1,000 per class); rrd's queue does not depend on the dataset size. kd is the "
                 "baseline without any embedding loss.", "", records_table(results["nce_k"], "label")]
    if results.get("crd_loss"):
        transient = {(r["n_data"], r["nce_k"]): r["transient_peak_mib"] for r in results["memory"]["crd_transient"]}
        rows = [[f"{r['n_data']:,}", r["nce_k"], r["sampler_ms"], r["loss_fwd_bwd_ms"],
                 transient.get((r["n_data"], r["nce_k"]), "-")] for r in results["crd_loss"]]
        text += ["### CRD loss alone (synthetic 64-d features, B=64)", "",
                 "`ContrastSampler` draw, then `CRDLoss` forward + backward (embeds, both banks, momentum update); "
                 "the transient is the CPU RSS peak of one forward + backward above the steady state (measured in "
                 "a separate process whose malloc maps every tensor separately). 1-minute load after each row: "
                 + ", ".join(f"{r['loadavg'][0]:.2f}" for r in results["crd_loss"] if r.get("loadavg")) + ".", "",
                 table(["n_data", "nce_k", "sampler ms", "CRDLoss fwd+bwd ms", "transient peak (MiB)"], rows)]
    if results.get("banks"):
        rows = [[f"{r['n_data']:,}", r["dtype"], r["computed_mib"], r.get("nbytes_mib", "-"),
                 r.get("rss_delta_mib", "-")] for r in results["banks"]]
        text += ["### CRD memory banks (two banks, n_data x 128)", "",
                 table(["n_data", "dtype", "computed (MiB)", "measured tensor bytes (MiB)", "measured RSS delta (MiB)"],
                       rows)]
        text += ["Measured: `ContrastMemory(..., bank_dtype=...)` (`--crd_bank_dtype`) in the same separate "
                 "process.", ""]
        model_rows = []
        for n_data in (CIFAR_N, IMAGENET_N):
            model = crd_step_model(n_data, 16384)
            model_rows.append([f"{n_data:,}", model["all_rows_gflop"], model["all_rows_transient_mib"],
                               model["gather_gflop"], model["gather_tensor_mib"]])
        text += ["Per-step scoring work at nce_k 16384, B=64, fp32 (computed). All-rows (this repo) scores every "
                 "bank row with one matmul, so its cost grows with n_data; gathering B x (K+1) x 128 rows (the "
                 "reference) grows with nce_k only:", "",
                 table(["n_data", "all-rows GFLOP (fwd+bwd, 2 banks)", "all-rows transient MiB (bank snapshots + "
                        "scores + grads)", "gather GFLOP (bmm fwd+bwd)", "gathered tensors MiB"], model_rows)]
    if results.get("scoring"):
        rows = [[f"{r['n_data']:,}", r["nce_k"], r["all_rows_ms"], r["gathered_ms"],
                 f"{r['gathered_ms'] / r['all_rows_ms']:.1f}x"] for r in results["scoring"]]
        text += ["Measured, one bank, forward + backward, B=64, fp32 (same machine; 1-minute load "
                 + ", ".join(f"{r['loadavg'][0]:.2f}" for r in results["scoring"] if r.get("loadavg")) + "):", "",
                 table(["n_data", "nce_k", "all-rows ms (this repo, with bank snapshot)",
                        "gathered rows ms (reference)", "gathered / all-rows"], rows),
                 crossover_text(results["scoring"][-1])]
    write_section("scaling", "\n".join(text), path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--quick", action="store_true", help="few steps and configurations (smoke run)")
    parser.add_argument("--skip", default="", help=f"comma list of parts to skip (their saved results are kept): "
                                                   f"{','.join(PART_NAMES)}")
    parser.add_argument("--wait_idle", type=float, default=60.0,
                        help="before each part wait up to this many seconds for other processes to go quiet")
    parser.add_argument("--json-out", dest="json_out", default=str(BENCH / "scaling.json"))
    parser.add_argument("--out", default=str(BENCH), help="folder whose RESULTS.md gets the section")
    parser.add_argument("--memory_probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    skip = {part for part in args.skip.split(",") if part}
    parts = {"batch": lambda: batch_size_sweep(args.device, args.quick),
             "nce_k": lambda: nce_k_sweep(args.device, args.quick),
             "crd_loss": lambda: crd_loss_cost(args.device, args.quick),
             "scoring": lambda: scoring_strategies(args.device, args.quick),
             "banks": lambda: bank_footprint(results["memory"])}
    if args.memory_probe:
        print(json.dumps(memory_probe(args.quick)))
        return
    saved = Path(args.json_out)  # parts skipped now keep their saved results
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() else {}
    if not {"crd_loss", "banks"} <= skip:
        results["memory"] = run_memory_probe(args.quick)
    for name, run in parts.items():
        if name not in skip:
            if args.wait_idle > 0 and name != "banks":
                throughput.wait_for_idle(args.wait_idle)
            started = time.perf_counter()
            results[name] = run()
            print(f"{name}: {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    Path(args.json_out).write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, Path(args.out) / "RESULTS.md")


if __name__ == "__main__":
    main()
