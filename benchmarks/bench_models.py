"""Speed of encoders, decoder and propagation on this CPU, beside FLOP counts and GEMM throughput.

Run: .venv/bin/python benchmarks/bench_models.py [--quick]
Targets (issue 3): decoder < 30 ms/prompt, light encoder < 150 ms per 256x256 slice,
100-slice 256x256 volume propagated end to end < 30 s.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from synthfm.models import build_model, encoding, fused_cpu, load_model
from synthfm.segment import PropagationOptions, Prompts, SlicePredictor, VolumeSegmenter
from synthfm.segment.adapt import AdaptExample, adapt_decoder
from synthfm.segment.predictor import cpu_has_fast_bf16


def timed(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def flops(fn) -> float:
    """FLOPs of ``fn`` counted on the plain layers (the counter does not see oneDNN's fused operators)."""
    counter, previous = FlopCounterMode(display=False), fused_cpu.set_enabled(False)
    with counter:
        fn()
    fused_cpu.set_enabled(previous)
    return counter.get_total_flops()


def gemm_gflops(dtype: torch.dtype, n: int = 2048) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / timed(lambda: a @ b, 5) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="skip ViT-B and use 20 slices for propagation")
    parser.add_argument("--slices", type=int, default=None,
                        help="slices of the propagated volume (default 100; 20 with --quick)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="propagate this many times per setting, the settings taking turns; the table gives the "
                             "median and the range (this machine's run-to-run spread is about 2 s per 100 slices)")
    parser.add_argument("--emulated-bf16", action="store_true",
                        help="time bf16 rows even on a CPU without native bf16 (minutes: oneDNN emulates it there)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    native = cpu_has_fast_bf16()
    dtypes = (torch.float32, torch.bfloat16) if native or args.emulated_bf16 else (torch.float32,)
    peak = {dtype: gemm_gflops(dtype) for dtype in (torch.float32, torch.bfloat16)}
    rows = []

    def row(name, seconds, fl, dtype):
        rows.append((name, seconds * 1e3, fl / 1e9, fl / seconds / 1e9, 100 * fl / seconds / 1e9 / peak[dtype]))

    lite = load_model("medsam-lite").requires_grad_(False)
    x = torch.rand(1, 3, 256, 256)
    f = flops(lambda: lite.encode(x))
    for dtype in dtypes:
        for fused in (False, True):  # plain layers vs oneDNN conv/linear + GELU fusion (synthfm.models.fused_cpu)
            fused_cpu.set_enabled(fused)
            with torch.autocast("cpu", torch.bfloat16, enabled=dtype == torch.bfloat16):
                row(f"TinyViT 256 {str(dtype)[6:]} {'fused' if fused else 'plain'}", timed(lambda: lite.encode(x), 5),
                    f, dtype)
    # two slices side by side, one thread each, per slice (synthfm.models.encoding; bf16 only, where it is exact)
    xx2 = torch.rand(2, 3, 256, 256)
    if torch.bfloat16 in dtypes:
        row("TinyViT bf16 2 side by side", timed(lambda: encoding.encode(lite, xx2, True, split=True), 3) / 2, f,
            torch.bfloat16)
    emb = lite.encode(x)
    pts, lab = torch.tensor([[[100.0, 120.0]]]), torch.tensor([[1]])
    f = flops(lambda: lite.decode(emb, pts, lab, multimask=True))
    for dtype in dtypes:
        with torch.autocast("cpu", torch.bfloat16, enabled=dtype == torch.bfloat16):
            row(f"decoder per prompt {str(dtype)[6:]}", timed(lambda: lite.decode(emb, pts, lab, multimask=True), 10),
                f, dtype)
    if not args.quick:
        vitb = build_model("sam-vit-b", pretrained=False).requires_grad_(False)  # random weights: timing only
        xb = torch.rand(1, 3, 1024, 1024)
        f = flops(lambda: vitb.encode(xb))
        for dtype in dtypes:
            with torch.autocast("cpu", torch.bfloat16, enabled=dtype == torch.bfloat16):
                row(f"ViT-B encoder 1024 {str(dtype)[6:]}", timed(lambda: vitb.encode(xb), 1), f, dtype)

    n = args.slices or (20 if args.quick else 100)
    zz, yy, xx = np.mgrid[:n, :256, :256]
    truth = ((xx - 128) / 50.0) ** 2 + ((yy - 120) / 40.0) ** 2 + ((zz - n / 2) / (0.45 * n)) ** 2 < 1
    volume = (100 + 80 * truth + np.random.default_rng(0).normal(0, 8, truth.shape)).astype(np.float32)
    ys, xs = np.nonzero(truth[n // 2])
    prompt = Prompts.make(box=(xs.min(), ys.min(), xs.max(), ys.max()))
    runs = {}  # label -> ([seconds per round], slices decoded, slices encoded)
    ours = load_model("synthfm-lite")
    plain = {"adapt_steps": 0}  # the decoder as shipped on every slice (the registry adapts a copy first)
    settings = (("medsam-lite, options' defaults", lite, None),
                ("synthfm-lite, every slice encoded", ours, {**plain, "encode_every": 1}),
                ("synthfm-lite, every 2nd slice encoded", ours, {**plain, "encode_every": 2}),
                ("synthfm-lite, registry defaults (+ decoder adapted)", ours, {}),
                ("  the same, one slice encoded at a time", ours, {}),
                ("  the same, propagated slices on crops", ours, {"decode_crop": 4, "decode_context": 4}))
    masks = {}
    for _ in range(max(1, args.repeat)):
        for label, model, overrides in settings:
            options = None if overrides is None else PropagationOptions.for_model(model, **overrides)  # {}: registry's
            side_by_side = encoding.set_side_by_side("one slice" not in label)  # before 2026-12-07: one at a time
            start = time.perf_counter()
            seg = VolumeSegmenter(SlicePredictor(model), volume)
            result = seg.propagate(n // 2, prompt, options=options)
            seconds = runs.get(label, ([],))[0] + [time.perf_counter() - start]
            encoding.set_side_by_side(side_by_side)
            runs[label] = (seconds, len(result.records), seg.predictor.encoder_calls)
            masks[label] = result.mask

    # the registry's adaptation alone (synthfm.segment.adapt): its steps on the prompted slice, in either precision
    registry = PropagationOptions.for_model(ours)
    steps = registry.adapt_steps or 10
    predictor = SlicePredictor(ours)
    first = predictor.predict(volume[n // 2], prompt, key="middle")
    example = [AdaptExample.of(predictor, volume[n // 2], "middle", first)]
    # on the whole embedding, and on the registry's crop around the mask with the rest pooled as context
    for label, crop in (("", {}), (" crop", {"crop": registry.adapt_crop, "context": registry.adapt_context})):
        if label and not registry.adapt_crop:
            continue
        f = flops(lambda: adapt_decoder(ours, example, 1, **crop))
        for dtype in dtypes:
            row(f"adaptation {steps} steps{label} {str(dtype)[6:]}",
                timed(lambda: adapt_decoder(ours, example, steps, bf16=dtype == torch.bfloat16, **crop), 1),
                steps * f, dtype)

    print(f"GEMM 2048^3 on this CPU: fp32 {peak[torch.float32]:.0f} GFLOP/s, bf16 {peak[torch.bfloat16]:.0f} GFLOP/s "
          f"({torch.get_num_threads()} threads; bf16 {'native' if native else 'emulated: its rows need --emulated-bf16'})\n")
    print(f"{'what':<32}{'ms':>10}{'GFLOP':>9}{'GFLOP/s':>10}{'% of GEMM':>11}")
    for name, ms, gf, rate, pct in rows:
        print(f"{name:<32}{ms:>10.1f}{gf:>9.2f}{rate:>10.1f}{pct:>10.0f}%")
    precision = "bf16" if seg.predictor.bf16 else "fp32"
    print(f"\npropagation of {n} slices of 256x256 ({precision}, box prompt on the middle slice), end to end:")
    for label, (seconds, decoded, encoded) in runs.items():
        spread = f"  ({min(seconds):.1f}-{max(seconds):.1f} s in {len(seconds)} runs)" if len(seconds) > 1 else ""
        print(f"  {label:<52}{np.median(seconds):>7.1f} s  {decoded:>4} slices decoded, {encoded:>4} slices encoded"
              f"{spread}")
    same = np.array_equal(masks["synthfm-lite, registry defaults (+ decoder adapted)"],
                          masks["  the same, one slice encoded at a time"])
    print(f"masks with slices encoded two side by side and one at a time: {'identical' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
