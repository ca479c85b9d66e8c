"""Synthetic generators that write the real data formats (no models here).

* :mod:`flowctl.data.synth.calorimeter`: CaloGAN-format showers for e+, γ and π+
  (``python -m flowctl.data.synth --out data/calo`` writes them and the 70/30 split).
"""

from flowctl.data.synth.calorimeter import PARTICLES, generate, write

__all__ = ["PARTICLES", "generate", "write"]
