"""Presentation-attack detection ("liveness"): is a live person in front of the reader, not a photo or a screen?

Modules: :mod:`.learned` (the MiniFASNet nets, their crops and bad input), :mod:`.texture` (per-frame pixel cues), :mod:`.motion` (landmark cues
over a window), :mod:`.fusion` (the shipped logistic coefficients),
:mod:`.stage` (per-track policy and verdicts).  The training script and
``kaoclock eval liveness`` are tooling: :mod:`firmware_py.eval.liveness_train`,
:mod:`firmware_py.eval.liveness`.
"""
