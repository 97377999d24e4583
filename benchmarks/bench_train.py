"""Training throughput on this CPU: decoder samples/s from cached embeddings (fp32 vs bf16) and the
share of time per sample spent generating, encoding and stepping the decoder.

Run: .venv/bin/python benchmarks/bench_train.py
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from synthfm.generate import GeneratorConfig, SyntheticGenerator
from synthfm.models import build_model
from synthfm.segment.preprocess import intensity_range, normalize, to_model_input
from synthfm.train import TrainConfig, Trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6, help="timed steps per row (same seeds, so same prompts)")
    args = parser.parse_args()
    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed"), 0)
    start = time.perf_counter()
    samples = [gen.sample_2d(i) for i in range(20)]
    t_gen = (time.perf_counter() - start) / 20

    model = build_model("synthfm-lite")
    x = torch.stack([to_model_input(normalize(s.image, *intensity_range(s.image, "percentile")), 256)[0]
                     for s in samples[:3]])
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        model.encode(x[:1])
        start = time.perf_counter()
        for i in range(3):
            model.encode(x[i:i + 1])
    t_enc = (time.perf_counter() - start) / 3

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = (("fp32", False, False), ("bf16 autocast (before 0.2)", True, True), ("bf16 decoder cast (now)", True, False))
        for name, bf16, autocast in paths:
            cfg = TrainConfig(model="synthfm-lite", samples=16, val_samples=4, steps=10_000, batch_size=8, bf16=bf16,
                              bf16_autocast=autocast, out=f"{tmp}/run-{len(rows)}", cache=f"{tmp}/cache",
                              correction_prob=0.5)
            trainer = Trainer(cfg)
            trainer.prepare_data()
            trainer.train_step()
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step()
            rows.append((name, (time.perf_counter() - start) / (args.steps * cfg.batch_size)))
    t_dec = rows[-1][1]
    print(f"{'decoder training (cached embeddings)':<40}{'samples/s':>10}")
    for name, per_sample in rows:
        print(f"  {name:<38}{1 / per_sample:>10.2f}")
    total = t_gen + t_enc + t_dec
    print(f"\nper synthetic image seen once (generate + encode + one bf16 decoder step): {total * 1e3:.0f} ms")
    for name, t in (("generation", t_gen), ("encoding (TinyViT, bf16)", t_enc), ("decoder step (bf16)", t_dec)):
        print(f"  {name:<30}{t * 1e3:>9.1f} ms {100 * t / total:>5.1f}%")
    print("with the embedding cache, later epochs cost only the decoder step")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
