"""Stage 1, generate: analytical synthetic images and volumes that mimic CT, MR and ultrasound.

``SyntheticGenerator(GeneratorConfig.from_preset("mixed"), seed).sample_2d(i)`` gives image, target
mask and full label map; ``sample_3d(i)`` a volume whose structures evolve from slice to slice.
"""
from synthfm.generate.config import GENERATOR_VERSION, PRESETS, GeneratorConfig
from synthfm.generate.sample import Sample2D, Sample3D, SyntheticGenerator

__all__ = ["GeneratorConfig", "PRESETS", "GENERATOR_VERSION", "SyntheticGenerator", "Sample2D", "Sample3D"]
