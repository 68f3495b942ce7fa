"""What the three entry scripts run, as a library: flags, run plan, models, method, data and stages.

``train_student.py``, ``train_teacher.py`` and ``transfer_student.py`` only call ``main`` of
``training.student``, ``training.teacher`` and ``training.transfer``; the sweeps, benchmarks and tests use these
modules the same way. Layers: entry scripts -> training -> methods and models -> the shared loop and
data (helper/, dataset/) -> utilities.
"""
from __future__ import annotations

# entry script -> the module that implements it (scripts/sweep.py plans runs through these)
ENTRY_MODULES = {"train_student.py": "training.student", "train_teacher.py": "training.teacher",
                 "transfer_student.py": "training.transfer"}
