"""The offline main job (`make demo`): train a teacher on the bundled `digits` data, distil
students with several methods, print an accuracy table, and draw what distillation did (analyze.py). Runs on 2 CPU cores in minutes.

Everything goes to save/demo/ (recreated on each run).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import analyze  # noqa: E402
import train_student  # noqa: E402
import train_teacher  # noqa: E402

TEACHER, STUDENT = "resnet20", "resnet8"
# (row label, --distill, extra flags); -a/-b as in the papers' tables (the methods' default weights).
STUDENTS = [
    ("KD", "kd", ["-r", "0.1", "-a", "0.9", "-b", "0"]),
    ("CRD", "crd", ["-a", "0", "-b", "0.8", "--nce_k", "1024"]),
    ("DCD", "dcd", ["-a", "0", "-b", "1"]),
    ("DCD+KD", "dcd", ["-a", "1", "-b", "1"]),
    ("RRD", "rrd", ["-a", "0", "-b", "1", "--nce_k", "1024"]),
    ("DKD", "dkd", ["-a", "0", "-b", "1", "--dkd_warmup", "2"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher_epochs", type=int, default=15)
    parser.add_argument("--student_epochs", type=int, default=10)
    parser.add_argument("--save_folder", default=str(ROOT / "save" / "demo"))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    save = Path(args.save_folder)
    shutil.rmtree(save, ignore_errors=True)
    common = ["--dataset", "digits", "--save_folder", str(save), "--device", args.device, "--no_progress",
              "--print_freq", "10"]

    def schedule(epochs: int) -> list[str]:
        return ["--epochs", str(epochs), "--lr_decay_epochs", f"{int(epochs * 0.6)},{int(epochs * 0.8)}",
                "--save_freq", str(epochs)]

    started = time.perf_counter()
    rows: list[tuple[str, str, float, float]] = []
    t0 = time.perf_counter()
    teacher_acc = train_teacher.main(["--model", TEACHER, *common, *schedule(args.teacher_epochs)])
    rows.append(("Teacher", TEACHER, teacher_acc, time.perf_counter() - t0))
    t0 = time.perf_counter()
    vanilla = train_teacher.main(["--model", STUDENT, *common, *schedule(args.student_epochs)])
    rows.append(("Student (vanilla)", STUDENT, vanilla, time.perf_counter() - t0))
    path_t = save / "models" / f"{TEACHER}_digits_vanilla" / f"{TEACHER}_last.pth"
    for label, key, weights in STUDENTS:
        t0 = time.perf_counter()
        acc = train_student.main(["--path_t", str(path_t), "--distill", key, "--model_s", STUDENT, *weights,
                                  *common, *schedule(args.student_epochs)])
        rows.append((label, STUDENT, acc, time.perf_counter() - t0))

    print(f"\nDemo on digits ({TEACHER} -> {STUDENT}), best test top-1 (%):\n")
    print(f"| {'run':<18} | {'model':<9} | {'top-1':>6} | {'time':>6} |")
    print(f"|{'-' * 20}|{'-' * 11}|{'-' * 8}|{'-' * 8}|")
    for label, model, acc, seconds in rows:
        print(f"| {label:<18} | {model:<9} | {acc:6.2f} | {seconds:5.0f}s |")
    print(f"\nTotal {time.perf_counter() - started:.0f}s; runs and metrics.csv files in {save}")
    students = [save / "models" / f"{STUDENT}_digits_vanilla", *sorted(save.glob("student/student_model/*"))]
    analyze.main(["--path_t", str(path_t), "--path_s", *map(str, students), "--dataset", "digits",
                  "--device", args.device, "--out", str(save / "analysis")])


if __name__ == "__main__":
    main()
