"""Throughput of the GPU codecs: one batched call against one image at a time.

    .venv/bin/python bench/gpu_codecs.py [--batch N] [--size S] [--quality Q]

For ``jpeg-nvjpeg`` and ``bmshj2018-factorized`` this encodes N photo crops
(S x S, cut from scikit-image's bundled photos, tiled by reflection and
jittered so no two are alike) with ``encode_batch`` and then with ``encode``
one by one, on CUDA when there is one, else on the CPU. Defaults: N=64 on
CUDA, 8 on the CPU (to finish in about a minute on 2 cores); S=512.

bmshj2018-factorized uses the zoo's checkpoint for the quality if one is
found where the codec library looks ($TWOAFC_CODEC_WEIGHTS, then torch hub's
cache); otherwise it builds a random-init model of the same size (N=128,
M=192 for qualities 1-5) in a temporary folder. Random weights time the
network and entropy coder faithfully but make meaningless images and bitrates;
the output says which was used.

The last line printed is one JSON object:
{"device": ..., "per_codec": {name: {"batched_per_s", "single_per_s", "speedup", ...}},
 "speedup_min": ...}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codecs"))

from skimage import data  # noqa: E402

from twoafc_codecs import gpu_jpeg, learned  # noqa: E402

_TEMP = tempfile.TemporaryDirectory(prefix="twoafc-bench-weights-")  # removed at exit
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def photo_crops(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    photos = [getattr(data, name)() for name in SOURCES]
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        height, width = photo.shape[:2]
        # Tile by reflection so that any photo covers size + jitter.
        pad_h, pad_w = max(0, size + 64 - height), max(0, size + 64 - width)
        tiled = np.pad(photo, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
        y = int(rng.integers(0, tiled.shape[0] - size + 1))
        x = int(rng.integers(0, tiled.shape[1] - size + 1))
        crop = tiled[y : y + size, x : x + size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crops.append(np.ascontiguousarray(crop))
    return crops


def prepare_factorized_weights(quality: int) -> str:
    """Say which weights bmshj2018-factorized will use, making random ones if needed."""
    arch = "bmshj2018-factorized"
    found = learned.find_checkpoint(arch, quality)
    if found is not None:
        return f"zoo checkpoint {found}"
    compressai = learned._compressai()
    import torch

    n, m = compressai.zoo.image.cfgs[arch][quality]
    torch.manual_seed(0)
    model = compressai.models.FactorizedPrior(N=n, M=m)
    model.update(force=True)
    folder = Path(_TEMP.name)
    torch.save(model.state_dict(), folder / learned.checkpoint_name(arch, quality))
    os.environ[learned.WEIGHTS_ENV] = str(folder)
    return f"random-init N={n} M={m} (no trained checkpoint found; timings only)"


def measure(codec, images: list[np.ndarray], quality: int, repeats: int) -> dict:
    # Warm up: model load, CUDA context, nvJPEG handles, kernel selection.
    codec.encode_batch(images[:2], quality)
    codec.encode(images[0], quality)
    batched_s = single_s = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        batched = codec.encode_batch(images, quality)
        batched_s = min(batched_s, time.perf_counter() - start)
        start = time.perf_counter()
        singles = [codec.encode(image, quality) for image in images]
        single_s = min(single_s, time.perf_counter() - start)
    pixels = sum(image.shape[0] * image.shape[1] for image in images)
    return {
        "batched_per_s": round(len(images) / batched_s, 2),
        "single_per_s": round(len(images) / single_s, 2),
        "speedup": round(single_s / batched_s, 3),
        "batch_equals_single": batched == singles,
        "bpp": round(sum(codec.bits(b) for b in batched) / pixels, 4),
        "version": (
            codec.version(quality)
            if isinstance(codec, learned.CompressAICodec)
            else codec.version()
        ),
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--quality", type=int, default=3, help="learned codec quality (1-8)")
    parser.add_argument("--jpeg-quality", type=int, default=75)
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = args.batch or (64 if device == "cuda" else 8)
    repeats = 3 if device == "cuda" else 1
    images = photo_crops(batch, args.size)
    print(f"device={device} batch={batch} size={args.size} repeats={repeats}", file=sys.stderr)

    weights = prepare_factorized_weights(args.quality)
    print(f"bmshj2018-factorized weights: {weights}", file=sys.stderr)
    factorized = next(c for c in learned.LEARNED_CODECS if c.name == "bmshj2018-factorized")

    per_codec = {}
    jobs = ((gpu_jpeg.NVJPEG_CODEC, args.jpeg_quality), (factorized, args.quality))
    for codec, quality in jobs:
        start = time.perf_counter()
        per_codec[codec.name] = measure(codec, images, quality, repeats)
        per_codec[codec.name]["quality"] = quality
        print(f"{codec.name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    per_codec["bmshj2018-factorized"]["weights"] = weights

    result = {
        "device": f"cuda ({torch.cuda.get_device_name()})" if device == "cuda" else "cpu",
        "batch": batch,
        "size": args.size,
        "per_codec": per_codec,
        "speedup_min": min(entry["speedup"] for entry in per_codec.values()),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
