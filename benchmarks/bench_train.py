"""Decoder training speed on this CPU with cached embeddings (fp32 vs bf16), and where the time goes.

Run: .venv/bin/python benchmarks/bench_train.py [--model synthfm-lite] [--threads 1] [--steps 10]

Prints per-sample times of the three costs of training (generate an image, encode it with the
frozen encoder, one decoder step) and their shares for the cached path (generation + encoding
paid once per image, reused every epoch) and the on-the-fly path (paid at every step).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from synthfm.generate import SyntheticGenerator
from synthfm.train import TrainConfig, Trainer
from synthfm.train.embed_cache import encode_samples


def per_item(fn, n: int) -> float:
    """Seconds per call of ``fn`` (one warm-up call first)."""
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synthfm-lite")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model=args.model, samples=2 * args.batch_size, val_samples=1, steps=10 ** 6,
                          batch_size=args.batch_size, correction_prob=0.5, out=tmp)
        trainer = Trainer(cfg)
        trainer.prepare_data()
        gen = SyntheticGenerator(cfg.generator_config(), 0)
        counter = iter(range(10 ** 6))
        t_gen = per_item(lambda: gen.sample_2d(next(counter)), 10)
        samples = [gen.sample_2d(i) for i in range(4)]
        t_enc = {bf16: per_item(lambda: encode_samples(trainer.model, samples, bf16), 2) / 4 for bf16 in (False, True)}
        t_dec = {}
        for bf16 in (False, True):
            cfg.bf16 = bf16
            t_dec[bf16] = per_item(trainer.train_step, args.steps) / args.batch_size
    print(f"model {args.model}, {args.threads} thread(s), batch {args.batch_size}, "
          f"{cfg.generator_config().size}px mixed preset, correction round in 50% of steps\n")
    print(f"{'cost per sample':<34}{'fp32 ms':>10}{'bf16 ms':>10}")
    print(f"{'generate one image':<34}{1e3 * t_gen:>10.1f}{1e3 * t_gen:>10.1f}")
    print(f"{'encode one image (frozen encoder)':<34}{1e3 * t_enc[False]:>10.1f}{1e3 * t_enc[True]:>10.1f}")
    print(f"{'decoder step (fwd+bwd+AdamW)':<34}{1e3 * t_dec[False]:>10.1f}{1e3 * t_dec[True]:>10.1f}")
    print(f"\n{'decoder training, cached embeddings':<40}{'samples/s':>10}")
    for bf16 in (False, True):
        print(f"{'  ' + ('bf16 autocast' if bf16 else 'fp32'):<40}{1 / t_dec[bf16]:>10.2f}")
    print(f"  bf16 speed-up: {t_dec[False] / t_dec[True]:.2f}x")
    for bf16 in (True,):
        total = t_gen + t_enc[bf16] + t_dec[bf16]
        print(f"\non-the-fly path (bf16), share of time per sample: generation {100 * t_gen / total:.0f}%, "
              f"encoding {100 * t_enc[bf16] / total:.0f}%, decoder {100 * t_dec[bf16] / total:.0f}%")
        for epochs in (10, 50):
            once = t_gen + t_enc[bf16]
            total = once + epochs * t_dec[bf16]
            print(f"cached path, {epochs} epochs: generation {100 * t_gen / total:.0f}%, encoding "
                  f"{100 * t_enc[bf16] / total:.0f}%, decoder {100 * epochs * t_dec[bf16] / total:.0f}%")


if __name__ == "__main__":
    main()
