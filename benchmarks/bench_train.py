"""Training throughput on this CPU: decoder samples/s from cached embeddings, old vs new path side by side,
and the share of time per sample spent generating, encoding and stepping the decoder.

Rows (each a full ``Trainer.train_step``: batch assembly, prompts, correction rounds, loss, backward, AdamW):
  * bf16 cast, plain decoder (old): the mask decoder in bf16 through segment-anything's forward
  * bf16 cast, fast decoder (new): the same weights through ``synthfm.models.fast_decoder``
  * with ``--all-paths`` also float32 and bf16 autocast (both plain, the paths before 0.2)
The rows' steps are interleaved (step 1 of every row, then step 2, ...) with the same seeds, so every row sees
the same prompts and the same load from other processes; the ratio is against the old row at the same thread
count.

Run: .venv/bin/python benchmarks/bench_train.py [--threads 1 2] [--steps 6] [--all-paths]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np
import torch

from synthfm.generate import GeneratorConfig, SyntheticGenerator
from synthfm.models import build_model, fast_decoder
from synthfm.segment.preprocess import intensity_range, normalize
from synthfm.train import TrainConfig, Trainer
from synthfm.train.embed_cache import encode_images

OLD = "bf16 cast, plain decoder (old)"
NEW = "bf16 cast, fast decoder (new)"
# name -> (bf16, bf16_autocast, fast decoder)
PATHS = {"fp32, plain decoder": (False, False, False), "bf16 autocast, plain decoder": (True, True, False),
         OLD: (True, False, False), NEW: (True, False, True)}


def time_rows(names: List[str], threads: int, steps: int, tmp: str) -> Dict[str, Tuple[float, float]]:
    """Wall and CPU (this process) seconds per sample of each path, at ``threads`` intra-op threads, steps
    interleaved across paths."""
    torch.set_num_threads(threads)
    trainers = {}
    for name in names:
        bf16, autocast, _ = PATHS[name]
        cfg = TrainConfig(model="synthfm-lite", samples=16, val_samples=4, steps=10_000, batch_size=8, bf16=bf16,
                          bf16_autocast=autocast, out=f"{tmp}/run-{threads}-{len(trainers)}", cache=f"{tmp}/cache",
                          correction_prob=0.5)
        trainers[name] = Trainer(cfg)
        trainers[name].prepare_data()
    seconds = {name: np.zeros(2) for name in names}
    for step in range(steps + 1):  # step 0 warms up
        for name, trainer in trainers.items():
            previous = fast_decoder.set_enabled(PATHS[name][2])
            try:
                start = np.array([time.perf_counter(), time.process_time()])
                trainer.train_step()
                if step:
                    seconds[name] += np.array([time.perf_counter(), time.process_time()]) - start
            finally:
                fast_decoder.set_enabled(previous)
    return {name: tuple(s / (steps * trainers[name].config.batch_size)) for name, s in seconds.items()}


def encode_and_generate_times() -> Tuple[float, float]:
    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed"), 0)
    start = time.perf_counter()
    samples = [gen.sample_2d(i) for i in range(20)]
    t_gen = (time.perf_counter() - start) / 20
    model = build_model("synthfm-lite")
    images = [normalize(s.image, *intensity_range(s.image, "percentile")) for s in samples[:4]]
    encode_images(model, images[:1], bf16=True)
    start = time.perf_counter()  # as a cache fill encodes them: two at a time (side by side with 2+ threads)
    encode_images(model, images[:2], bf16=True)
    encode_images(model, images[2:], bf16=True)
    return t_gen, (time.perf_counter() - start) / 4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6, help="timed steps per row (same seeds, so same prompts)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch.set_num_threads values")
    parser.add_argument("--all-paths", action="store_true", help="also time fp32 and bf16 autocast (plain)")
    args = parser.parse_args()
    names = list(PATHS) if args.all_paths else [OLD, NEW]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            results[threads] = time_rows(names, threads, args.steps, tmp)
    torch.set_num_threads(args.threads[0])
    print(f"{'decoder training, cached embeddings, B = 8':<46}{'threads':>8}{'samples/s':>11}{'vs old':>8}"
          f"{'CPU s/sample':>14}{'vs old':>8}")
    for threads, rows in results.items():
        for name, (wall, cpu) in rows.items():
            print(f"  {name:<44}{threads:>8}{1 / wall:>11.2f}{rows[OLD][0] / wall:>7.2f}x{cpu:>14.3f}"
                  f"{rows[OLD][1] / cpu:>7.2f}x")
    print("(CPU s: this process's CPU time; on a machine shared with other work its ratio is the steadier one)")
    t_gen, t_enc = encode_and_generate_times()
    t_dec = results[args.threads[0]][NEW][0]
    total = t_gen + t_enc + t_dec
    print(f"\nper synthetic image seen once (generate + encode + one new decoder step, {args.threads[0]} thread(s)): "
          f"{total * 1e3:.0f} ms")
    for name, t in (("generation", t_gen), ("encoding (TinyViT, bf16)", t_enc), ("decoder step (new)", t_dec)):
        print(f"  {name:<30}{t * 1e3:>9.1f} ms {100 * t / total:>5.1f}%")
    print("with the embedding cache, later epochs cost only the decoder step")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
