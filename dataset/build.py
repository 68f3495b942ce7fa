"""The data of a run: the dataset named by the flags, loaded and wrapped in this rank's loaders."""
from __future__ import annotations

import argparse
import os
from typing import Any

import torch

from dataset import load_dataset, make_loaders
from dataset.digest import content_of_loaded
from helper import distributed
from helper.errors import UserError
from helper.options import check_batch_size
from helper.runner import resolve_speed_options


def build_data(opt: argparse.Namespace, device: torch.device, views: tuple[str, ...] = ("weak",)
               ) -> tuple[Any, Any, Any]:
    """Load ``opt.dataset`` from ``opt.data_folder`` and return (data, train_loader, test_loader);
    under torchrun the loaders yield this rank's share of each batch. ``data.content_digest`` is set
    (dataset/digest.py: from its cache, else computed and cached). ``views``: the augmented views
    of each training image (dataset.VIEWS; a tuple of image tensors per batch when more than one)."""
    rank, processes = distributed.rank(), distributed.world_size()
    if opt.dataset == "imagenet":
        if tuple(views) != ("weak",):
            raise UserError(f"--distill {opt.distill} trains on the augmented views {', '.join(views)} of each image, "
                            "which the loaders of the 32x32 datasets provide but the ImageNet loader does not. Train "
                            "it on --dataset cifar100, or pick another --distill.")
        from dataset.imagenet import load_imagenet, make_imagenet_loaders  # PIL/JPEG decoding only when needed

        data = load_imagenet(opt.data_folder)
        data.content_digest = content_of_loaded(data, opt.dataset, opt.data_folder, write=distributed.is_main())
        check_batch_size(opt.batch_size, data.num_train, opt.dataset, processes)
        train_loader, test_loader = make_imagenet_loaders(
            data, opt.batch_size, device, image_size=opt.image_size, num_workers=opt.num_workers, seed=opt.seed,
            decode=opt.decode, channels_last=opt.channels_last, rank=rank, world_size=processes)
        resolve_speed_options(opt, device, len(train_loader) * opt.epochs)
        return data, train_loader, test_loader
    download = os.environ.get("DISTILLERS_OFFLINE", "0") != "1"
    if processes > 1:  # rank 0 downloads what is missing while the others wait, then they read it
        if distributed.is_main():
            load_dataset(opt.dataset, opt.data_folder, download=download)
        distributed.barrier()
    data = load_dataset(opt.dataset, opt.data_folder, download=download and processes == 1)
    data.content_digest = content_of_loaded(data, opt.dataset, opt.data_folder, write=distributed.is_main())
    check_batch_size(opt.batch_size, int(data.train_labels.shape[0]), opt.dataset, processes)
    train_loader, test_loader = make_loaders(data, opt.batch_size, device, loader=opt.loader,
                                             num_workers=opt.num_workers, seed=opt.seed,
                                             channels_last=opt.channels_last, rank=rank, world_size=processes,
                                             views=tuple(views))
    resolve_speed_options(opt, device, len(train_loader) * opt.epochs)
    return data, train_loader, test_loader
