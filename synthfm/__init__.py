"""SynthFM: promptable medical image segmentation with a SAM decoder trained on synthetic data only.

The package mirrors the pipeline: ``generate`` -> ``train`` -> ``segment`` -> ``evaluate``,
with ``models`` (encoders, decoders, weights), ``io`` (volumes, atomic writes) and ``cli``.
It never imports Slicer; the Slicer modules in this repository are thin layers over it.
"""

__version__ = "0.1.0"
