"""Offline analysis of trained checkpoints (``analyze.py``): what distillation did to a student.

* ``extract``: checkpoints -> models -> batched logits, embeddings and feature maps on a test split;
* ``metrics``: linear CKA (Kornblith et al., ICML 2019), class-mean logit correlations, ECE
  (Guo et al., ICML 2017), per-class accuracy;
* ``plots``: the matplotlib figures (Agg canvas);
* ``report``: runs all of them and writes the PNGs with their CSV/JSON numbers.

Not part of the training path: ``helper/`` never imports this package.
"""
