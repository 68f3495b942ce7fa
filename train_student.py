"""Distil a teacher into a student with any method of distiller_zoo/ (RepDistiller command line).

    python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth \
        --distill kd --model_s resnet8x4 -r 0.1 -a 0.9 -b 0 --trial 1
    torchrun --nproc_per_node 8 train_student.py --dataset imagenet --path_t resnet34-b627a593.pth \
        --model_s tv_resnet18 --distill crd --lr_scaling linear --sync_bn
Loss = gamma*CE + alpha*KD + beta*method; omitted -r/-a/-b take the method's defaults.
Everything it runs lives in training/student.py, which the sweeps, benchmarks and tests use as a library.
"""
from training.student import main

if __name__ == "__main__":
    main()
