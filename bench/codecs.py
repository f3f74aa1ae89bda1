"""What the platform costs on top of the codec libraries, and a real study generation.

    .venv/bin/python bench/codecs.py [--quick] [--postgres] [--skip-study] [--skip-codecs]

Part 1, library overhead per codec. For every registered codec of the
``cpu`` queue, and ``jpeg-nvjpeg`` (on this machine's CPU when there is no
CUDA), at one mid setting (about 0.5-1 bpp on photos), on 512x512 crops of
scikit-image's bundled photos:

* ours: ``twoafc_codecs.encode_image(crop, name, level)``, then all 64 patches
  of the 8x8 grid with ``cut_patch``;
* bare: the same library calls with the same parameters (read from the codec
  classes), written directly, with no twoafc code, then the same numpy slices.

Both count patches per second of this process's CPU time, so that other
work on a busy machine stays out of the comparison; wall-clock rates are
reported too (``*_per_wall_s``, ``ratio_wall``). torch, for ``jpeg-nvjpeg``,
is held to one thread, as the other codecs are. Photos whose short side is
under 512 (coffee, chelsea, rocket, colorwheel) are upscaled with Lanczos
first. Before timing, every crop goes through both, and the script checks
that they give the same bytes (or at least the same decoded pixels); a codec
where they differ is flagged in ``same_output``.
Timed runs alternate ours/bare (ABBA order, so a drift in machine speed hits
both sides alike) and each side keeps its best run. ``ratio`` is
ours_per_s / bare_per_s; the target is ratio >= 0.9 for every codec, i.e. the
validation, bitrate measuring and packaging in ``encode_image`` and
``cut_patch`` cost at most 10%. A codec under 0.9 is profiled (cProfile of
the ours loop) and its top functions are printed and put in the JSON.

Part 2, a 2,000-stimulus study end to end. In a temporary TWOAFC_DATA_DIR
(fresh SQLite file, kombu's filesystem broker; with ``--postgres`` the
DATABASE_URL and REDIS_URL of the environment instead) Django is set up in
this process, the database migrated, and a study of 10 photos x 10
conditions (JPEG, WebP, JPEG 2000) x 20 patches (crop 512, patch 64) built
through ``studies.services``. A real Celery worker process (``-Q cpu,gpu
-c 2``) generates it; ``study_2000_s`` is the wall time from
``start_generation`` to the job being DONE. ``split_s`` is the job's per-stage
totals (encode, crop, storage, db), summed over chunks and over the worker's
two pool processes, so it can exceed the wall time; loading and cropping the
source PNG and Celery's own overhead are in no stage. The worker's process
tree is sampled from /proc every 0.2 s for its peak RSS. ``--quick`` makes
200 stimuli (2 photos x 10 conditions x 10 patches) and shortens part 1.

Progress goes to stderr; the last line of stdout is one JSON object:
{"ratio_min", "per_codec": {name: {"ours_per_s", "bare_per_s", "ratio", "bpp",
 "version", ...}}, "study_2000_s", "study_2000": {"stimuli", "chunks",
 "split_s": {"encode", "crop", "storage", "db"}, "worker_peak_rss_mb", ...},
 "machine": {...}}
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from benchdb import SOURCE_ROOTS

sys.path[:0] = [str(p) for p in SOURCE_ROOTS if str(p) not in sys.path]

import twoafc_codecs  # noqa: E402
from twoafc_codecs import jpeg_turbo  # noqa: E402

TARGET_RATIO = 0.9
CROP = 512
PATCH = 64
GRID = [(y, x) for y in range(0, CROP, PATCH) for x in range(0, CROP, PATCH)]  # 64 patches

# (seconds per run, runs per side): fast codecs (under 30 ms a crop) get many short runs, so
# that the best of them is a stretch where nothing else on the machine got in the way.
PLANS = {
    "full": {"fast": (0.25, 12), "slow": (0.8, 4)},
    "quick": {"fast": (0.1, 6), "slow": (0.3, 2)},
}

# One mid setting per codec: 0.5-1 bpp averaged over the part-1 crops (measured).
LEVELS = {
    "jpeg": 50,  # ~0.77 bpp
    "jpeg422": 40,  # ~0.75
    "jpeg444": 30,  # ~0.71
    "jpeg2000": 32,  # compression ratio 32:1 of 24 bpp = 0.75
    "jpeg2000-db": 34,  # PSNR target; ~0.5-1 bpp depending on the photo
    "webp": 75,  # ~0.72
    "avif": 60,  # ~0.67
    "heic": 45,  # ~0.65
    "jpegxl": 75,  # ~0.73
    "jpegxr": 40,  # ~0.76
    "jpeg-nvjpeg": 50,  # ~0.77 on the CPU path (libjpeg 4:2:0)
}

PART1_PHOTOS = ("astronaut", "coffee", "chelsea", "immunohistochemistry", "rocket")
STUDY_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
    "hubble_deep_field", "retina", "colorwheel", "camera", "brick",
)  # fmt: skip
STUDY_CONDITIONS = (
    ("jpeg", 10), ("jpeg", 25), ("jpeg", 50), ("jpeg", 80),
    ("webp", 20), ("webp", 50), ("webp", 80),
    ("jpeg2000", 24), ("jpeg2000", 48), ("jpeg2000", 96),
)  # fmt: skip


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def photo(name: str, min_side: int = CROP) -> np.ndarray:
    """A bundled scikit-image photo as RGB uint8, upscaled (Lanczos) if its short side < min_side."""
    from PIL import Image
    from skimage import data

    pixels = np.asarray(getattr(data, name)())
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    pixels = np.ascontiguousarray(pixels[..., :3]).astype(np.uint8)
    height, width = pixels.shape[:2]
    scale = min_side / min(height, width)
    if scale > 1:
        size = (max(min_side, round(width * scale)), max(min_side, round(height * scale)))
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))
    return pixels


# --- part 1: bare library loops, written out from the codec classes -----------------


def bare_pillow(pillow_format: str, **options):
    """Pillow save with ``options``, Image.open + numpy to decode: what PillowCodec calls."""
    from PIL import Image

    def encode(image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, pillow_format, **options)
        return buffer.getvalue()

    def decode(data: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data)))

    return encode, decode


def bare_jpeg(level: int, subsampling: str):
    """libjpeg-turbo through imagecodecs when the codec takes that path (it says), else Pillow."""
    import imagecodecs

    if not jpeg_turbo.turbo_matches_pillow():
        return bare_pillow(
            "JPEG", quality=level, subsampling=subsampling, optimize=False, progressive=False
        )
    turbo = {"4:2:0": "420", "4:2:2": "422", "4:4:4": "444"}[subsampling]

    def encode(image: np.ndarray) -> bytes:
        return imagecodecs.jpeg8_encode(
            image, level=level, subsampling=turbo, optimize=False, lossless=False
        )

    return encode, imagecodecs.jpeg8_decode


def bare_jpeg2000(level: int, quality_mode: str):
    return bare_pillow(
        "JPEG2000",
        quality_mode=quality_mode,
        quality_layers=[level],
        irreversible=True,
        no_jp2=True,
        progression="LRCP",
    )


def bare_heic(level: int):
    import pillow_heif

    def encode(image: np.ndarray) -> bytes:
        height, width = image.shape[:2]
        buffer = io.BytesIO()
        pillow_heif.encode(
            "RGB",
            (width, height),
            image.tobytes(),
            buffer,
            quality=level,
            enc_params={
                "chroma": "420",
                "preset": "slow",
                "tune": "ssim",
                "tu-intra-depth": "2",
                "x265:pools": "1",
                "x265:frame-threads": "1",
            },
            save_nclx_profile=True,
            color_primaries=1,
            transfer_characteristics=13,
            matrix_coefficients=6,
            full_range_flag=1,
            tile_size=0,
        )
        return buffer.getvalue()

    def decode(data: bytes) -> np.ndarray:
        return np.asarray(pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True))

    return encode, decode


def bare_jpegxl(level: int):
    import imagecodecs

    def encode(image: np.ndarray) -> bytes:
        return imagecodecs.jpegxl_encode(
            image,
            level=level,
            effort=7,
            lossless=False,
            decodingspeed=0,
            usecontainer=False,
            numthreads=1,
        )

    def decode(data: bytes) -> np.ndarray:
        return imagecodecs.jpegxl_decode(data, numthreads=1)

    return encode, decode


def bare_jpegxr(level: int):
    import imagecodecs

    def encode(image: np.ndarray) -> bytes:
        return imagecodecs.jpegxr_encode(image, level=level / 100, photometric="RGB")

    return encode, imagecodecs.jpegxr_decode


def bare_nvjpeg(level: int):
    """torchvision's encode_jpeg / decode_jpeg on one tensor, on CUDA if present."""
    import torch

    # One intra-op thread, like every other codec here: on a busy 2-core machine torch's
    # pool waits for descheduled threads (permute().contiguous() took 2-14 ms instead of
    # 0.8), which swamped the difference being measured. Ours and bare share the setting.
    torch.set_num_threads(1)

    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities")
    import torchvision.io as tio

    device = "cuda" if torch.cuda.is_available() else "cpu"

    def encode(image: np.ndarray) -> bytes:
        tensor = torch.from_numpy(image).to(device).permute(2, 0, 1).contiguous()
        return tio.encode_jpeg(tensor, quality=level).cpu().numpy().tobytes()

    def decode(data: bytes) -> np.ndarray:
        tensor = torch.from_numpy(np.frombuffer(data, np.uint8).copy())
        pixels = tio.decode_jpeg(tensor, mode=tio.ImageReadMode.RGB, device=device)
        return pixels.permute(1, 2, 0).cpu().numpy()

    return encode, decode


BARE = {
    "jpeg": lambda level: bare_jpeg(level, "4:2:0"),
    "jpeg422": lambda level: bare_jpeg(level, "4:2:2"),
    "jpeg444": lambda level: bare_jpeg(level, "4:4:4"),
    "jpeg2000": lambda level: bare_jpeg2000(level, "rates"),
    "jpeg2000-db": lambda level: bare_jpeg2000(level, "dB"),
    "webp": lambda level: bare_pillow("WEBP", quality=level, lossless=False, method=4, exact=False),
    "avif": lambda level: bare_pillow(
        "AVIF",
        quality=level,
        speed=6,
        subsampling="4:2:0",
        max_threads=1,
        codec="aom",
        range="full",
        tile_rows=0,
        tile_cols=0,
        autotiling=False,
    ),
    "heic": bare_heic,
    "jpegxl": bare_jpegxl,
    "jpegxr": bare_jpegxr,
    "jpeg-nvjpeg": bare_nvjpeg,
}


def ours_loop(name: str, level: int):
    def run(images: list[np.ndarray]) -> int:
        count = 0
        for image in images:
            encoded = twoafc_codecs.encode_image(image, name, level)
            patches = [twoafc_codecs.cut_patch(encoded.decoded, y, x, PATCH) for y, x in GRID]
            count += len(patches)
        return count

    return run


def bare_loop(encode, decode):
    def run(images: list[np.ndarray]) -> int:
        count = 0
        for image in images:
            decoded = decode(encode(image))
            patches = [decoded[y : y + PATCH, x : x + PATCH].copy() for y, x in GRID]
            count += len(patches)
        return count

    return run


def patches_per_s(run, images: list[np.ndarray]) -> tuple[float, float]:
    """Patches per second of this process's CPU time, and per second of wall time."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    count = run(images)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return count / max(cpu, 1e-9), count / wall


def compare_outputs(
    name: str, level: int, encode, decode, images
) -> tuple[str, list[float], float]:
    """Run every crop through ours and bare once (also the warm-up).

    Returns ("bytes" | "pixels" | "DIFFERENT: ...", the bpp per crop, seconds per crop of bare).
    """
    verdict, bpps, bare_s = "bytes", [], 0.0
    for image in images:
        ours = twoafc_codecs.encode_image(image, name, level)
        started = time.perf_counter()
        data = encode(image)
        pixels = decode(data)
        bare_s += time.perf_counter() - started
        bpps.append(ours.bpp)
        if ours.data == bytes(data):
            continue
        if pixels.shape == ours.decoded.shape and np.array_equal(pixels, ours.decoded):
            verdict = "pixels" if verdict == "bytes" else verdict
        else:
            verdict = (
                f"DIFFERENT: {len(ours.data)} vs {len(data)} bytes, decoded "
                f"{ours.decoded.shape} vs {pixels.shape}"
            )
    return verdict, bpps, bare_s / len(images)


def profile_top(run, images: list[np.ndarray], top: int = 10) -> list[str]:
    """cProfile one run of ``run``; the functions that took the most time of their own."""
    profiler = cProfile.Profile()
    profiler.enable()
    run(images)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, function), (_, calls, tottime, cumtime, _) in stats.stats.items():
        rows.append((tottime, cumtime, calls, f"{Path(filename).name}:{line}({function})"))
    rows.sort(reverse=True)
    total = sum(row[0] for row in rows) or 1.0
    return [
        f"{where}: {tottime * 1e3:.1f} ms own ({100 * tottime / total:.1f}%), "
        f"{cumtime * 1e3:.1f} ms cum, {calls} calls"
        for tottime, cumtime, calls, where in rows[:top]
    ]


def bench_codec(name: str, images, plan: dict) -> dict:
    codec = twoafc_codecs.get_codec(name)
    level = LEVELS.get(name)
    if level is None:
        level = (codec.level_min + codec.level_max) // 2
    encode, decode = BARE[name](level)
    ours, bare = ours_loop(name, level), bare_loop(encode, decode)
    same, bpps, seconds_per_image = compare_outputs(name, level, encode, decode, images)
    if same.startswith("DIFFERENT"):
        log(f"  !! {name}: ours and bare do not give the same output ({same})")
    target_s, reps = plan["fast" if seconds_per_image < 0.03 else "slow"]
    per_run = max(1, round(target_s / max(seconds_per_image, 1e-6)))  # crops per run
    run_images = [images[i % len(images)] for i in range(per_run)]
    best = {"ours": (0.0, 0.0), "bare": (0.0, 0.0)}  # (per cpu s, per wall s), best of each
    for rep in range(reps):
        order = (("ours", ours), ("bare", bare))
        for side, run in order if rep % 2 == 0 else order[::-1]:  # ABBA...
            rates = patches_per_s(run, run_images)
            best[side] = (max(best[side][0], rates[0]), max(best[side][1], rates[1]))
    (ours_cpu, ours_wall), (bare_cpu, bare_wall) = best["ours"], best["bare"]
    result = {
        "level": level,
        "ours_per_s": round(ours_cpu, 1),
        "bare_per_s": round(bare_cpu, 1),
        "ratio": round(ours_cpu / bare_cpu, 4),
        "ours_per_wall_s": round(ours_wall, 1),
        "bare_per_wall_s": round(bare_wall, 1),
        "ratio_wall": round(ours_wall / bare_wall, 4),
        "bpp": round(float(np.mean(bpps)), 3),
        "version": codec.version_at(level),
        "same_output": same,
        "crops_per_run": per_run,
        "repeats": reps,
    }
    if result["ratio"] < TARGET_RATIO:
        result["profile_top"] = profile_top(ours, run_images)
        log(f"  {name} under {TARGET_RATIO}: cProfile of ours, by own time:")
        for line in result["profile_top"]:
            log(f"    {line}")
    return result


def part1_codecs(quick: bool) -> dict:
    registered = twoafc_codecs.available_codecs()
    names = [n for n in registered if twoafc_codecs.get_codec(n).queue == "cpu"]
    if "jpeg-nvjpeg" in registered:
        names.append("jpeg-nvjpeg")
    photos = PART1_PHOTOS[:3] if quick else PART1_PHOTOS
    images = [twoafc_codecs.center_crop(photo(p), CROP) for p in photos]
    plan = PLANS["quick" if quick else "full"]
    log(
        f"part 1: {len(names)} codecs on {len(images)} crops {CROP}x{CROP}, {len(GRID)} patches each"
    )
    per_codec, skipped = {}, {}
    for name in names:
        if name not in BARE:
            skipped[name] = "no bare loop written for this codec"
            log(f"  {name}: skipped ({skipped[name]})")
            continue
        started = time.perf_counter()
        result = per_codec[name] = bench_codec(name, images, plan)
        log(
            f"  {name:12s} level {result['level']:3d}  {result['bpp']:.2f} bpp  "
            f"ours {result['ours_per_s']:9.0f}/s  bare {result['bare_per_s']:9.0f}/s  "
            f"ratio {result['ratio']:.3f} (wall {result['ratio_wall']:.3f})  "
            f"same {result['same_output']}  "
            f"({time.perf_counter() - started:.1f} s)"
        )
    return {"per_codec": per_codec, "skipped": skipped}


# --- part 2: a study generated by a real Celery worker -------------------------------


def process_table() -> dict[int, tuple[int, int, float]]:
    """pid -> (parent pid, resident pages, cpu seconds) for every process we can read."""
    ticks = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        # After the command name: state, ppid, ..., utime (11), stime (12), ..., rss (21).
        table[int(entry)] = (
            int(fields[1]),
            int(fields[21]),
            (int(fields[11]) + int(fields[12])) / ticks,
        )
    return table


def tree_usage(root: int) -> tuple[float, float, float, int]:
    """(RSS of the tree in MB, RSS of its largest process in MB, cpu seconds, processes)."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            tree.append(pid)
            todo.extend(children.get(pid, []))
    page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
    rss = [table[pid][1] * page_mb for pid in tree]
    return sum(rss), max(rss, default=0.0), sum(table[pid][2] for pid in tree), len(tree)


def configure_environment(data_dir: Path, postgres: bool) -> None:
    """Point the settings (of this process and the worker it starts) at a scratch folder."""
    os.environ["TWOAFC_DATA_DIR"] = str(data_dir)
    os.environ["TWOAFC_BROKER_DIR"] = str(data_dir / "broker")
    os.environ["DJANGO_SETTINGS_MODULE"] = "twoafc.settings"
    for name in ("AWS_STORAGE_BUCKET_NAME", "CELERY_TASK_ALWAYS_EAGER", "CELERY_BROKER_URL"):
        os.environ.pop(name, None)
    if postgres:
        missing = [n for n in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(n)]
        if missing:
            raise SystemExit(f"--postgres needs {' and '.join(missing)} in the environment")
    else:
        os.environ.pop("DATABASE_URL", None)
        os.environ.pop("REDIS_URL", None)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [*map(str, SOURCE_ROOTS), os.environ.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)


def start_worker(log_path: Path) -> subprocess.Popen:
    from twoafc import processes

    # INFO: wait_until_ready watches the log for the worker's "ready." line.
    return processes.start(
        processes.worker_command(loglevel="INFO"), env=dict(os.environ), stdout=open(log_path, "w")
    )


def wait_until_ready(worker: subprocess.Popen, log_path: Path, timeout_s: float = 120) -> float:
    started = time.perf_counter()
    while " ready." not in log_path.read_text(errors="replace"):
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}:\n{tail(log_path)}")
        if time.perf_counter() - started > timeout_s:
            raise RuntimeError(f"the worker was not ready after {timeout_s} s:\n{tail(log_path)}")
        time.sleep(0.1)
    return time.perf_counter() - started


def stop_worker(worker: subprocess.Popen) -> None:
    from twoafc import processes

    processes.stop(worker)  # warm shutdown first: running tasks finish


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:]


def build_study(sources: int, patches: int):
    from studies import services
    from studies.models import Condition, Study

    study = Study.objects.create(
        name=f"bench codecs {time.strftime('%Y%m%d-%H%M%S')} {os.getpid()}",
        patch_size=PATCH,
        patches_per_image=patches,
        crop_size=CROP,
    )
    for name in STUDY_PHOTOS[:sources]:
        services.add_source_image(study, services.png_bytes(photo(name)), f"{name}.png")
    for codec, level in STUDY_CONDITIONS:
        Condition.objects.create(study=study, codec=codec, level=level)
    return study


def delete_study(study) -> None:
    """Remove the study's rows from a shared database (its files go with the scratch folder)."""
    from studies.models import Stimulus

    # Stimulus.condition is PROTECT: a generated Study cannot be deleted in one call.
    Stimulus.objects.filter(patch__source__study=study).delete()
    study.delete()


def part2_study(quick: bool, postgres: bool, keep: bool) -> dict:
    sources, patches = (2, 10) if quick else (10, 20)
    data_dir = Path(tempfile.mkdtemp(prefix="twoafc-bench-"))
    try:
        return generate_study(data_dir, sources, patches, postgres)
    finally:
        if keep:
            log(f"  kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def generate_study(data_dir: Path, sources: int, patches: int, postgres: bool) -> dict:
    configure_environment(data_dir, postgres)
    import django

    django.setup()
    from django.core.management import call_command

    from studies import services, tasks
    from studies.models import GenerationJob, Stimulus

    log(
        f"part 2: {sources} photos x {len(STUDY_CONDITIONS)} conditions x {patches} patches in {data_dir}"
    )
    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    study = build_study(sources, patches)
    setup_s = time.perf_counter() - started
    log(f"  migrated and built the study in {setup_s:.1f} s")

    log_path = data_dir / "worker.log"
    worker = start_worker(log_path)
    try:
        ready_s = wait_until_ready(worker, log_path)
        _, _, cpu_before, _ = tree_usage(worker.pid)
        log(f"  worker ready in {ready_s:.1f} s; generating")
        peak_rss = peak_single = cpu_after = 0.0
        processes = 0
        started = time.perf_counter()
        job = services.start_generation(study, enqueue=tasks.enqueue_generation)
        last_sample = 0.0
        first_chunk = all_chunks = None  # seconds after start, as seen by this loop
        while True:
            now = time.perf_counter()
            if now - last_sample >= 0.2:
                last_sample = now
                rss, single, cpu_after, count = tree_usage(worker.pid)
                peak_rss, peak_single = max(peak_rss, rss), max(peak_single, single)
                processes = max(processes, count)
            job.refresh_from_db()
            if job.done and first_chunk is None:
                first_chunk = now - started
            if job.total and job.done >= job.total and all_chunks is None:
                all_chunks = now - started
            if job.status == GenerationJob.Status.DONE:
                wall_s = time.perf_counter() - started
                break
            if job.status == GenerationJob.Status.FAILED:
                raise RuntimeError(f"generation failed: {job.error}\n{tail(log_path)}")
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}:\n{tail(log_path)}")
            if now - started > 900:
                raise RuntimeError(f"generation not done after 900 s ({job.done}/{job.total})")
            time.sleep(0.05)
        _, _, cpu_after, _ = tree_usage(worker.pid)
    finally:
        stopping = time.perf_counter()
        stop_worker(worker)
        log(f"  worker stopped in {time.perf_counter() - stopping:.1f} s")
    log(f"  generated in {wall_s:.1f} s")

    stimuli = Stimulus.objects.filter(patch__source__study=study).count()
    expected = sources * len(STUDY_CONDITIONS) * patches
    if stimuli != expected:
        raise RuntimeError(f"the job is DONE with {stimuli} stimuli, {expected} expected")
    result = {
        "stimuli": stimuli,
        "chunks": job.total,
        "triplets": study.triplets.count(),
        "split_s": {
            "encode": round(job.encode_s, 2),
            "crop": round(job.crop_s, 2),
            "storage": round(job.storage_s, 2),
            "db": round(job.db_s, 2),
        },
        "split_sum_s": round(job.encode_s + job.crop_s + job.storage_s + job.db_s, 2),
        # start -> first chunk recorded (reference patches cut, first encode), -> last chunk
        # recorded, -> DONE (triplets paired); from 50 ms polling, so +-0.05 s each.
        "phases_s": {
            "to_first_chunk": round(first_chunk if first_chunk is not None else wall_s, 2),
            "chunks": round((all_chunks or wall_s) - (first_chunk or 0.0), 2),
            "finish": round(wall_s - (all_chunks or wall_s), 2),
        },
        "worker_cpu_s": round(cpu_after - cpu_before, 2),
        "worker_peak_rss_mb": round(peak_rss, 1),
        "worker_peak_rss_mb_largest_process": round(peak_single, 1),
        "worker_processes": processes,
        "job_created_to_finished_s": round((job.finished_at - job.created_at).total_seconds(), 2),
        "setup_s": round(setup_s, 2),
        "worker_ready_s": round(ready_s, 2),
        "database": "postgresql+redis" if postgres else "sqlite+filesystem broker",
        "conditions": [f"{codec}@{level}" for codec, level in STUDY_CONDITIONS],
        "sources": list(STUDY_PHOTOS[:sources]),
    }
    if postgres:
        delete_study(study)
    return {"wall_s": round(wall_s, 2), "result": result}


# --- the machine ---------------------------------------------------------------------


def machine() -> dict:
    import imagecodecs
    import PIL
    from PIL import features

    info = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "imagecodecs": imagecodecs.__version__,
        "libjpeg_turbo_via_imagecodecs": imagecodecs.jpeg8_version(),
        "jpeg_fast_path": jpeg_turbo.turbo_matches_pillow(),
        "openjpeg": features.version("jpg_2000"),
        "libwebp": features.version("webp"),
        "libavif": features.version("avif"),
    }
    try:
        with open("/proc/cpuinfo") as handle:
            models = [
                line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")
            ]
        info["cpu_model"] = models[0] if models else platform.processor()
    except OSError:
        pass
    for module in ("pillow_heif", "torch", "torchvision", "django", "celery", "kombu"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter part 1, 200-stimulus study")
    parser.add_argument("--postgres", action="store_true", help="part 2 on DATABASE_URL/REDIS_URL")
    parser.add_argument("--skip-codecs", action="store_true", help="leave out part 1")
    parser.add_argument("--skip-study", action="store_true", help="leave out part 2")
    parser.add_argument("--keep", action="store_true", help="keep part 2's scratch folder")
    args = parser.parse_args()

    load_at_start = os.getloadavg()[0]  # other work on the machine makes the numbers noisy
    out: dict = {"ratio_min": None, "target_ratio": TARGET_RATIO, "per_codec": {}}
    if not args.skip_codecs:
        started = time.perf_counter()
        part1 = part1_codecs(args.quick)
        out["per_codec"] = part1["per_codec"]
        if part1["skipped"]:
            out["skipped_codecs"] = part1["skipped"]
        ratios = [r["ratio"] for r in part1["per_codec"].values()]
        out["ratio_min"] = min(ratios) if ratios else None
        out["under_target"] = sorted(
            name for name, r in part1["per_codec"].items() if r["ratio"] < TARGET_RATIO
        )
        out["part1_s"] = round(time.perf_counter() - started, 1)
        log(f"part 1 took {out['part1_s']} s; ratio_min {out['ratio_min']}")
    if not args.skip_study:
        part2 = part2_study(args.quick, args.postgres, args.keep)
        out["study_2000_s"] = part2["wall_s"]
        out["study_2000"] = part2["result"]
    out["quick"] = args.quick
    out["machine"] = machine()
    out["machine"]["loadavg_1min"] = {"start": load_at_start, "end": os.getloadavg()[0]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
