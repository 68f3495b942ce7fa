"""Linear evaluation of a distilled student on another dataset (STL-10, TinyImageNet).

    python transfer_student.py --path_s <student ckpt> --model_s wrn_16_2 --dataset stl10 --trial 1
The student's classifier is replaced by a new linear layer for the target classes; everything
else is frozen (BatchNorm statistics included) and only that layer is trained.
Everything it runs lives in training/transfer.py, which the sweeps, benchmarks and tests use as a library.
"""
from training.transfer import main

if __name__ == "__main__":
    main()
