"""Distillation methods. ``METHODS`` maps each ``--distill`` key to its Distiller class.

To add a method: copy the closest module (e.g. ``pkt.py``), change the loss, and add one import
line below; the ``@register`` decorator does the rest.
"""
from distiller_zoo.losses import *  # noqa: F401,F403  (RepDistiller-compatible loss classes)
from distiller_zoo.base import METHODS, DistillContext, Distiller, DistillTask, Features, register  # noqa: F401

from distiller_zoo import (  # noqa: F401  (each import registers one --distill key)
    kd, hint, attention, similarity, correlation, vid, crd, rkd, pkt, abound, factor, fsp, nst, rrd, dcd,
)
