"""The method interface and the registry: one ``Distiller`` subclass per file ``distiller_zoo/<key>.py``.

A method owns its loss math, its extra trainable modules (embeds, regressors, connectors), says
what it consumes (logits only or features, pre-ReLU features, an init stage), its display name,
paper, default weights and its own command-line flags. ``distiller_zoo/task.py`` combines its loss
with cross-entropy and KD into the weighted total ``gamma*CE + alpha*KD + beta*method``.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from helper.errors import UserError, did_you_mean
from helper.loop import Progress
from helper.optimizers import DEFAULT_OPTIMIZER, OPTIMIZERS, add_optimizer_args
from helper.options import add_training_args

METHODS: dict[str, type["Distiller"]] = {}
TEACHER_MODES = ("eval", "train")  # Distiller.teacher_mode


def register(cls: type["Distiller"]) -> type["Distiller"]:
    """Class decorator: make a Distiller available as ``--distill <key>``, the key being its file name."""
    key = cls.__module__.rsplit(".", 1)[-1]
    if key in METHODS:
        raise ValueError(f"distiller_zoo/{key}.py registers two methods; a method is one file")
    for name in (key, *cls.aliases):
        if name in METHODS or name in PRESETS or any(name in other.aliases for other in METHODS.values()):
            raise ValueError(f"--distill '{name}' is claimed twice (distiller_zoo/{key}.py)")
    if cls.teacher_mode not in TEACHER_MODES:
        raise ValueError(f"distiller_zoo/{key}.py: teacher_mode must be one of {TEACHER_MODES}, "
                         f"got {cls.teacher_mode!r}")
    cls.key = key
    METHODS[key] = cls
    return cls


@dataclass(frozen=True)
class Flag:
    """One command-line flag a method declares; ``-h`` shows it in the group of the methods using it.

    The type follows ``default`` (a bool default makes a switch). ``minimum``/``above`` bound the
    value from below (inclusive/exclusive), ``maximum`` from above (inclusive); a float must be
    finite; ``choices`` restricts it.
    """

    name: str
    default: Any
    help: str
    minimum: float | None = None
    above: float | None = None
    choices: tuple[Any, ...] | None = None
    maximum: float | None = None

    @property
    def dest(self) -> str:
        return self.name.lstrip("-")

    def add_to(self, group: argparse._ArgumentGroup) -> None:
        if isinstance(self.default, bool):
            group.add_argument(self.name, action="store_true", help=self.help)
            return
        group.add_argument(self.name, type=type(self.default), default=self.default, choices=self.choices,
                           help=self.help)

    def check(self, value: Any) -> None:
        """Raise UserError when ``value`` is outside the declared range (or a non-finite float)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        broken = []
        if self.minimum is not None and not value >= self.minimum:
            broken.append(f">= {self.minimum:g}")
        if self.above is not None and not value > self.above:
            broken.append(f"> {self.above:g}")
        if self.maximum is not None and not value <= self.maximum:
            broken.append(f"<= {self.maximum:g}")
        if broken or not math.isfinite(value):
            wanted = " and ".join(broken) if broken else "a finite number"
            raise UserError(f"{self.name} must be {wanted}, got {value}. {self.help[:1].upper()}{self.help[1:]}; the "
                            f"default is {self.default}.")


@dataclass
class DistillContext:
    """What a method may look at while building its modules."""

    opt: argparse.Namespace          # all flags (feat_dim, nce_k, kd_T, hint_layer, ...)
    student: nn.Module
    teacher: nn.Module
    student_shapes: list[torch.Size]  # feature shapes for a 2x3xSxS batch (S = 32, or --image_size; preact as asked)
    teacher_shapes: list[torch.Size]
    train_labels: Tensor              # (n_data,) labels of the training split (CRD sampling)
    device: torch.device

    @property
    def n_data(self) -> int:
        return int(self.train_labels.shape[0])

    def loss_options(self) -> argparse.Namespace:
        """The flags plus s_dim/t_dim/n_data, as the reference CRD/RRD/DCD losses expect them."""
        return argparse.Namespace(**vars(self.opt), s_dim=int(self.student_shapes[-1][1]),
                                  t_dim=int(self.teacher_shapes[-1][1]), n_data=self.n_data)


@dataclass
class Features:
    """Both networks' outputs for one batch, as a method sees them, and where training is."""

    student: list[Tensor]
    teacher: list[Tensor]
    student_logits: Tensor
    teacher_logits: Tensor
    labels: Tensor
    index: Tensor
    progress: Progress = Progress()
    views: dict[str, "Features"] = field(default_factory=dict)  # the other views (Distiller.views[1:]) by name
    deployed_logits: Tensor | None = None  # set by ``loss`` when the deployed model's logits come for free (SimKD)


class Distiller(nn.Module):
    """Base class of a method. Subclasses set the class attributes and implement ``loss``."""

    key: ClassVar[str]                         # set by @register: the file name
    display_name: ClassVar[str] = ""           # the name in the papers' tables (FitNet, AT, ...)
    paper: ClassVar[str] = ""                  # authors, title, venue year
    aliases: ClassVar[tuple[str, ...]] = ()    # earlier --distill names that mean this method
    flags: ClassVar[tuple[Flag, ...]] = ()     # the method's own command-line flags
    default_gamma: ClassVar[float] = 1.0       # -r when omitted
    default_alpha: ClassVar[float] = 0.0       # -a when omitted
    default_beta: ClassVar[float] = 0.0        # -b when omitted
    sweep_with_kd: ClassVar[bool] = False      # the sweep also runs KEY+kd (-r 1 -a 1 -b default)
    uses_features: ClassVar[bool] = True       # False: logits only (no is_feat forward)
    # What loss() reads of the teacher: "logits" (features.teacher_logits only), "embedding" (also
    # features.teacher[-1], the pooled vector the classifier reads) or "maps" (any feature). The
    # first two can come from a teacher bank (dataset/teacher_bank.py) instead of the teacher.
    teacher_reads: ClassVar[str] = "maps"
    uses_preact: ClassVar[bool] = False        # features taken before the stage's last ReLU
    # How the frozen teacher runs in the training step: "eval" (BatchNorm with its running statistics;
    # folded into the convolutions, a teacher bank can serve it) or "train" (BatchNorm with each batch's
    # own statistics, as OFD's official code runs it; not folded, no bank). Still frozen either way:
    # no gradients, and validation and the feature-shape probes run it in eval mode.
    teacher_mode: ClassVar[str] = "eval"
    teacher_preact: ClassVar[bool | None] = None  # the teacher's features pre-ReLU; None: as uses_preact
    has_method_loss: ClassVar[bool] = True     # False (abound, fsp): main stage is CE (+KD) only
    init_stage: ClassVar[bool] = False         # pre-train some modules for --init_epochs first
    warmup_flag: ClassVar[str | None] = None   # the flag of the epochs over which the loss ramps in
    # Augmented views of each training image (dataset.VIEWS: 'weak' = crop + flip, 'strong' = also
    # RandAugment + Cutout). The first view is the batch of CE, KD and accuracy; the others reach
    # loss() as features.views[name], and the CE term sums over all views.
    views: ClassVar[tuple[str, ...]] = ("weak",)

    def __init__(self, context: DistillContext) -> None:
        super().__init__()

    @classmethod
    def teacher_uses_preact(cls) -> bool:
        """Whether the teacher's features are taken pre-ReLU (``teacher_preact``, else ``uses_preact``)."""
        return cls.uses_preact if cls.teacher_preact is None else cls.teacher_preact

    @classmethod
    def warmup_notice(cls, opt: argparse.Namespace) -> str | None:
        """One line when --epochs ends before the loss has ramped in over ``warmup_flag`` epochs, else None."""
        warmup = getattr(opt, cls.warmup_flag.lstrip("-"), 0) if cls.warmup_flag else 0
        if opt.epochs >= warmup:
            return None
        return (f"note: --epochs {opt.epochs} is shorter than {cls.label()}'s warm-up ({cls.warmup_flag} {warmup}): "
                f"its loss weight ramps up over {warmup} epochs and reaches {opt.epochs / warmup:.0%} by the last "
                f"epoch; pass e.g. {cls.warmup_flag} {max(opt.epochs // 10, 1)} for a short run.")

    def loss(self, features: Features) -> Tensor:
        """The method loss for one batch (unweighted)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Hook after optimizer.step() (memory-bank updates)."""

    def frozen_modules(self) -> list[nn.Module]:
        """Own modules that stay in eval mode and untrained in the main stage."""
        return []

    def epoch_scalars(self) -> dict[str, float]:
        """Values to log once per epoch beside the losses (e.g. a learned temperature)."""
        return {}

    # deployed model (SimKD) -----------------------------------------------------------------
    def deployed_model(self, student: nn.Module) -> nn.Module | None:
        """The network validated each epoch and reported instead of the bare student, or None (the
        student). Its ``forward(images)`` returns logits; it shares the student's and this method's
        modules. Checkpoints keep the student under 'model' and add ``{'deployed': deployed_entry()}``;
        a ``loss`` that computes its logits anyway may set ``features.deployed_logits`` so that the
        training accuracy is measured on them too."""
        return None

    def deployed_entry(self) -> dict[str, Any]:
        """What ``load_deployed`` needs besides the student: {'method': key, shapes, state dicts}."""
        raise NotImplementedError

    @classmethod
    def load_deployed(cls, student: nn.Module, entry: dict[str, Any]) -> nn.Module:
        """Rebuild the deployed model around a loaded ``student`` from a checkpoint's 'deployed' entry."""
        raise NotImplementedError

    # init stage (abound, factor, fsp) -------------------------------------------------------
    def init_modules(self, student: nn.Module) -> list[nn.Module]:
        """Modules trained in the init stage (teacher and the rest of the student stay in eval)."""
        return []

    def init_loss(self, features: Features) -> Tensor:
        raise NotImplementedError

    def init_learning_rate(self, opt: argparse.Namespace) -> float:
        return opt.learning_rate

    def trainable_parameters(self) -> list[nn.Parameter]:
        frozen = {id(p) for module in self.frozen_modules() for p in module.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in frozen]

    @classmethod
    def label(cls, alpha: float = 0.0) -> str:
        """The table row name: 'CRD', or 'CRD+KD' when the KD term is on (-a > 0)."""
        name = cls.display_name or cls.key
        return f"{name}+KD" if alpha and cls.default_alpha == 0 else name


# Flags several methods share (declared once, listed by each method that reads them).
FEAT_DIM = Flag("--feat_dim", 128, "embedding size", minimum=1)
NCE_K = Flag("--nce_k", 16384, "CRD negatives per anchor / RRD queue length", minimum=1)
LOGIT_STAND = Flag("--logit_stand", False, "z-score each sample's logits before the temperature in the KD "
                   "term (-a) and in the logit losses that support it (Sun et al., Logit Standardization in KD, "
                   "CVPR 2024)")
NCE_T = Flag("--nce_t", 0.07, "CRD temperature; with --dcd_fixed_tau, DCD's fixed logit scale", above=0)
INIT_EPOCHS = Flag("--init_epochs", 30, "epochs of the init stage, before the main one", minimum=0)


def warmup_factor(epoch: int, warmup_epochs: int) -> float:
    """The weight of a loss that ramps in over ``warmup_epochs`` (a method's ``warmup_flag``): min(epoch /
    warmup, 1) with the 1-based epoch (mdistiller's trainers); 1 when warmup is 0."""
    return min(epoch / warmup_epochs, 1.0) if warmup_epochs > 0 else 1.0


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``-h`` group per set of methods sharing flags: e.g. 'FitNet' holds --hint_layer and
    'CRD, RRD' holds --nce_k. Flags are declared by the method files (``flags``)."""
    users: dict[str, list[str]] = {}
    declared: dict[str, Flag] = {}
    for method in METHODS.values():
        for flag in method.flags:
            if declared.setdefault(flag.name, flag) != flag:
                raise ValueError(f"{flag.name} is declared differently by {', '.join(users[flag.name])} and "
                                 f"{method.key}; declare it once (distiller_zoo/base.py) and share it")
            users.setdefault(flag.name, []).append(method.label())
    groups: dict[tuple[str, ...], argparse._ArgumentGroup] = {}
    for name, flag in declared.items():
        owners = tuple(users[name])
        if owners not in groups:
            groups[owners] = parser.add_argument_group(f"{', '.join(owners)} (--distill "
                                                       f"{' / '.join(m.key for m in METHODS.values() if m.label() in owners)})")
        flag.add_to(groups[owners])


def add_distillation_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that set what a distillation run trains: the loss weights -r/-a/-b, every method's
    own flags, the optimizer's and the training flags (train_student.py's; the recipes validate against them too)."""
    parser.add_argument("-r", "--gamma", type=float, default=None,
                        help="weight of the cross-entropy term (default: the method's; kd 0.1, others 1)")
    parser.add_argument("-a", "--alpha", type=float, default=None,
                        help="weight of the KD term (default: the method's; kd 0.9, others 0)")
    parser.add_argument("-b", "--beta", type=float, default=None,
                        help="weight of the method's own loss (default: the method's, e.g. crd 0.8, dcd 1)")
    add_method_arguments(parser)
    add_optimizer_args(parser)
    add_training_args(parser, learning_rate=None, trial="1")


def check_method_arguments(opt: argparse.Namespace) -> None:
    """Range-check every method flag (UserError with the flag's name, range and default)."""
    for method in METHODS.values():
        for flag in method.flags:
            if hasattr(opt, flag.dest):
                flag.check(getattr(opt, flag.dest))


def unused_method_flags(key: str) -> set[str]:
    """Option names of the flags only other methods read: their values cannot change a run of
    ``--distill key`` (the KD flags count for every method: the -a term reads them)."""
    used = {flag.dest for flag in (*METHODS[key].flags, *METHODS["kd"].flags)}
    return {flag.dest for method in METHODS.values() for flag in method.flags} - used


def deployed_from_checkpoint(student: nn.Module, state: dict[str, Any]) -> nn.Module:
    """The network whose accuracy a checkpoint reports: ``student`` (already loaded from its 'model'),
    or, when the checkpoint has a 'deployed' entry, the model its method rebuilds around it."""
    entry = state.get("deployed")
    if not entry:
        return student
    return resolve_method(str(entry.get("method"))).load_deployed(student, entry)


def resolve_method(name: str) -> type[Distiller]:
    """The method registered as ``name``, under the earlier name ``name`` (icd -> dcd), or trained by
    the preset ``name`` (dot -> kd)."""
    if name in METHODS:
        return METHODS[name]
    if name in PRESETS:
        return METHODS[PRESETS[name].method]
    for method in METHODS.values():
        if name in method.aliases:
            return method
    spellings = {spelling: key for key, method in METHODS.items() for spelling in (*method.aliases, method.display_name)}
    raise UserError(f"Unknown --distill '{name}'.{did_you_mean(name, [*METHODS, *PRESETS], spellings)} Choose one "
                    f"of: {', '.join([*METHODS, *PRESETS])} (README, 'Methods', says what each one is).")


# ------------------------------------------------------------------------------ presets
@dataclass(frozen=True)
class Preset:
    """A ``--distill`` name for a method trained with another ``--optimizer``: ``--distill dot`` is
    ``--distill kd --optimizer dot``. Both spellings are one run: its folder and run record use the
    preset's name, as runs of the name did before the optimizer became a flag."""

    name: str
    method: str      # the method's key
    optimizer: str   # a key of helper.optimizers.OPTIMIZERS


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    """Make ``preset.name`` a ``--distill`` name (it must not be a method's key or earlier name)."""
    if preset.name in METHODS or preset.name in PRESETS or any(preset.name in m.aliases for m in METHODS.values()):
        raise ValueError(f"--distill '{preset.name}' is claimed twice (preset)")
    if preset.optimizer not in OPTIMIZERS or preset.optimizer == DEFAULT_OPTIMIZER:
        raise ValueError(f"preset '{preset.name}': --optimizer {preset.optimizer} is not one of {list(OPTIMIZERS)[1:]}")
    PRESETS[preset.name] = preset
    return preset


def resolve_distill(opt: argparse.Namespace) -> None:
    """``--distill NAME`` -> ``opt.distill`` = the method's key, and for a preset ``opt.optimizer`` =
    its optimizer (refusing another --optimizer)."""
    method = resolve_method(opt.distill)
    preset = PRESETS.get(opt.distill)
    if preset is not None:
        if opt.optimizer not in (None, preset.optimizer):
            raise UserError(f"--distill {preset.name} is --distill {preset.method} --optimizer {preset.optimizer}; it "
                            f"cannot train with --optimizer {opt.optimizer}. Pass --distill {preset.method} "
                            f"--optimizer {opt.optimizer} for that run.")
        opt.optimizer = preset.optimizer
    elif method.key != opt.distill:
        print(f"--distill {opt.distill} is the earlier name of --distill {method.key}; training {method.key}.")
    opt.distill = method.key


def run_method_name(key: str, optimizer: str | None) -> str:
    """The name of method ``key`` trained with ``optimizer`` in run folders, run records and the sweeps:
    the key with SGD, the preset's name where one exists ('dot'), else 'KEY_OPTIMIZER' ('crd_dot')."""
    if optimizer in (None, DEFAULT_OPTIMIZER):
        return key
    preset = next((p for p in PRESETS.values() if (p.method, p.optimizer) == (key, optimizer)), None)
    return preset.name if preset is not None else f"{key}_{optimizer}"


def split_method_name(name: str) -> tuple[str, str] | None:
    """(method key, optimizer) of a run-folder method name ('dot' -> ('kd', 'dot'), 'crd_dot' -> ('crd',
    'dot'), 'crd' -> ('crd', 'sgd')); None for a name of no method."""
    if name in METHODS:
        return name, DEFAULT_OPTIMIZER
    if name in PRESETS:
        return PRESETS[name].method, PRESETS[name].optimizer
    key, _, optimizer = name.rpartition("_")
    return (key, optimizer) if key in METHODS and optimizer in OPTIMIZERS else None


def method_label(name: str, alpha: float = 0.0) -> str:
    """The table row name of a run-folder method name: 'CRD', 'CRD+KD' (-a > 0), 'KD+DOT' (--optimizer
    dot); a name of no method stays as it is."""
    split = split_method_name(name)
    if split is None:
        return name
    key, optimizer = split
    return METHODS[key].label(alpha) + ("" if optimizer == DEFAULT_OPTIMIZER else f"+{OPTIMIZERS[optimizer].label}")


def recorded_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A run's settings as its record holds them: 'distill' is the run-folder method name, and
    'optimizer' is left out where that name implies it (a preset; SGD is never recorded)."""
    name = run_method_name(settings["distill"], settings.get("optimizer"))
    if name not in PRESETS:
        return settings
    return {**{key: value for key, value in settings.items() if key != "optimizer"}, "distill": name}
