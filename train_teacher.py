"""Train a teacher (or a vanilla student) with cross-entropy.

    python train_teacher.py --model resnet32x4
    torchrun --nproc_per_node 4 train_teacher.py --model resnet32x4 --lr_scaling linear
Saves to save/models/<model>_vanilla[_trial_<t>]/ (other datasets: <model>_<dataset>_vanilla...).
Everything it runs lives in training/teacher.py, which the sweeps, benchmarks and tests use as a library.
"""
from training.teacher import main

if __name__ == "__main__":
    main()
