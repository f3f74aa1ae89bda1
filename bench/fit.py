"""DPL fitting: ours (φ once per stimulus, cached) against the ``lpips`` package's own Trainer.

    .venv/bin/python bench/fit.py [--triplets 20000] [--quick] [--trainer-steps N]

The vote set is shaped like a real study. Reference patches (64x64, not flat) are cut at stride 32
from the 8 RGB photos bundled with scikit-image, taken from the photos in turn. Each photo is encoded whole by our codecs at six
settings (jpeg quality 10/25/50, webp quality 5/20/50, through ``twoafc_codecs.encode_image``)
and the distorted patches are cut from the decoded images at the same places. Each reference
gets all 15 pairs of its 6 distortions as triplets (1,334 references for 20,000 triplets).

Votes come from a simulated observer: the stlpips-alex trunk with its trained heads
multiplied channel by channel by exp(N(0, 0.7)) (a person whose sensitivities are not the
network's), P(p1 chosen) = sigmoid((d0 - d1) / t), with t set so that the observer agrees with
its own noiseless distance 80% of the time; 2 to 5 votes per triplet. Triplets are split by
reference, 30% of the references for test (``analytics.fitting.split_by_group``).
``afc_observer`` is the test 2AFC of the observer's own noiseless distance: about the best
any fit can reach on these votes; ``afc_start_heads`` is the network's heads before fitting.

Both fits start from the same network: the stlpips-alex trunk (``analytics.dpl``) and its
trained heads; both run 10 epochs (5 constant + 5 linear decay), batch 50, Adam (0.5, 0.999),
the same learning rate (ours' default for these heads, 2e-2 x mean(w)), weights clamped >= 0.

* ours_s: cold feature cache; load the network, hash every stimulus, compute φ once per
  stimulus (each reference once per batch), store it, then ``fitting.fit_weights``.
* lpips_trainer_s: ``lpips.Trainer().initialize(model="lpips", net="alex", pnet_rand=True,
  is_train=True)``, its AlexNet replaced by the same stlpips trunk module and its heads set to
  the same start, then train.py's loop: ``set_input({ref, p0, p1, judge})`` and
  ``optimize_parameters()`` per batch of 50, ``update_learning_rate(5)`` after each decay
  epoch. Batches come from tensors already in memory (no PNG decoding), which only flatters
  the trainer. If the full run would take too long, ``--trainer-steps N`` times N steps and
  extrapolates per step (``lpips_trainer_measured_steps`` says so in the JSON). Its 2AFC then
  comes from a second trainer run in full (10 epochs) on the triplets of the first
  ``--afc-subset-refs`` training references, and ``afc_delta_pts`` compares it with ours
  fitted on the same subset (``afc_ours_subset``); both are scored on the whole test split.
* ``ours_split_s`` / ``refit_split_s``: seconds in loading the network and hashing the
  stimuli, in features (compute or read the cache) and in the fit itself.
* refit_s: a warm cache (every φ read from disk) and a new fit with a new seed.
* speedup_unshared: a BAPPS-shaped set where no triplet shares an image with another
  (``--unshared`` triplets, default 1,000, own reference and two own distortions each); both
  sides timed on it the same way (the trainer per step, extrapolated to its 10 epochs).
* score_10k_s: every registry metric (``analytics.metrics.METRICS``) on 10,000 triplets: the
  distance of each distinct stimulus, then the 2AFC of each metric.

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchdb import SOURCE_ROOTS

sys.path[:0] = [str(p) for p in SOURCE_ROOTS if str(p) not in sys.path]

import torch  # noqa: E402
from skimage import data as skdata  # noqa: E402

import twoafc_codecs  # noqa: E402
from analytics import dpl, feature_cache, fitting, metrics, scoring  # noqa: E402

PATCH = 64
STRIDE = 32
CONDITIONS = (("jpeg", 10), ("jpeg", 25), ("jpeg", 50), ("webp", 5), ("webp", 20), ("webp", 50))
# The RGB photos that scikit-image bundles (no download needed); "cat" is "chelsea".
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "colorwheel")  # fmt: skip
EPOCHS = 10
BATCH = 50
TEST_FRACTION = 0.3


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ data


def photos() -> list[np.ndarray]:
    out = []
    for name in PHOTOS:
        img = np.asarray(getattr(skdata, name)())
        if img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
            out.append(img)
    return out


def study_set(n_refs: int, seed: int = 0):
    """References (R, 64, 64, 3) and their 6 codec versions (R, 6, 64, 64, 3)."""
    images = photos()
    rng = np.random.default_rng(seed)
    per_photo = []
    for i, img in enumerate(images):
        places = [
            (i, y, x)
            for y in range(0, img.shape[0] - PATCH + 1, STRIDE)
            for x in range(0, img.shape[1] - PATCH + 1, STRIDE)
            if img[y : y + PATCH, x : x + PATCH].std() >= 4  # no flat background
        ]
        per_photo.append([places[k] for k in rng.permutation(len(places))])
    if n_refs > sum(map(len, per_photo)):
        raise SystemExit(f"only {sum(map(len, per_photo))} patch places in the bundled photos")
    chosen = []  # round robin over the photos, so that no photo dominates
    while len(chosen) < n_refs:
        for places in per_photo:
            if places and len(chosen) < n_refs:
                chosen.append(places.pop())
    decoded = [
        [twoafc_codecs.encode_image(img, codec, level).decoded for codec, level in CONDITIONS]
        for img in images
    ]
    refs = np.stack([images[i][y : y + PATCH, x : x + PATCH] for i, y, x in chosen])
    dists = np.stack(
        [np.stack([d[y : y + PATCH, x : x + PATCH] for d in decoded[i]]) for i, y, x in chosen]
    )
    return refs, dists


def observer_votes(phi0, phi1, heads, seed: int = 0):
    """n_p0, n_p1 of the simulated observer (see the module docstring), and its noiseless
    d1 - d0 (whose 2AFC is the best any metric can expect on these votes)."""
    rng = np.random.default_rng(seed)
    w = heads * np.exp(rng.normal(0.0, 0.7, heads.shape)).astype(np.float32)
    delta = phi0 @ w - phi1 @ w  # > 0: p1 is closer
    # logistic noise of scale t: agreement with the noiseless order is E[sigmoid(|delta|/t)]
    t = _temperature(np.abs(delta), target=0.80)
    p1 = 1.0 / (1.0 + np.exp(-delta / t))
    n = rng.integers(2, 6, len(delta))
    n_p1 = rng.binomial(n, p1)
    return (n - n_p1).astype(np.float64), n_p1.astype(np.float64), -delta


def _temperature(gap: np.ndarray, target: float) -> float:
    lo, hi = 1e-9, float(gap.max() * 100 + 1e-9)
    for _ in range(60):  # bisection on log t
        t = math.sqrt(lo * hi)
        if np.mean(1.0 / (1.0 + np.exp(-gap / t))) > target:
            lo = t
        else:
            hi = t
    return math.sqrt(lo * hi)


def triplets_shared(n_refs: int):
    """All 15 pairs of 6 distortions per reference, sides in random order."""
    rng = np.random.default_rng(1)
    pairs = [(a, b) for a in range(6) for b in range(a + 1, 6)]
    ref = np.repeat(np.arange(n_refs), len(pairs))
    a = np.tile([p[0] for p in pairs], n_refs)
    b = np.tile([p[1] for p in pairs], n_refs)
    swap = rng.random(len(ref)) < 0.5
    p0 = np.where(swap, b, a) + 6 * ref  # stimulus index = 6 * ref + distortion
    p1 = np.where(swap, a, b) + 6 * ref
    return ref, p0, p1


# ------------------------------------------------------------------------------ fits


def fit_ours(refs, stimuli, ref_of, p0, p1, judge, train, cache_dir, lr, seed=0):
    """Time from nothing loaded to fitted weights; returns (seconds, weights, φ, computed,
    split), split = seconds of {load, features, fit}."""
    start = time.perf_counter()
    net = dpl.load_dpl("stlpips-alex")
    keys = [feature_cache.stimulus_key(i, refs[ref_of[i]], s) for i, s in enumerate(stimuli)]
    cache = feature_cache.FeatureCache(cache_dir, feature_cache.trunk_identity(net))
    loaded = time.perf_counter()
    feats = feature_cache.features_for(net, cache, keys, refs, stimuli, ref_of)
    featured = time.perf_counter()
    fit = fitting.fit_weights(
        feats.phi[p0[train]], feats.phi[p1[train]], judge[train],
        epochs=EPOCHS, lr=lr, seed=seed, init=net.weights(),
    )  # fmt: skip
    end = time.perf_counter()
    split = {"load_and_hash": loaded - start, "features": featured - loaded, "fit": end - featured}
    return end - start, fit.weights, feats.phi, feats.computed, split


def make_trainer(lr: float):
    import lpips

    with contextlib.redirect_stdout(sys.stderr):
        trainer = lpips.Trainer()
        trainer.initialize(
            model="lpips", net="alex", pnet_rand=True, use_gpu=torch.cuda.is_available(),
            is_train=True, lr=lr, beta1=0.5,
        )  # fmt: skip
    st = dpl.load_dpl("stlpips-alex")
    lp = trainer.net.module if hasattr(trainer.net, "module") else trainer.net
    lp.net = st.net.to(next(lp.parameters()).device)  # same trunk, frozen as in lpips
    with torch.no_grad():
        for i, part in enumerate(torch.split(torch.from_numpy(st.weights()), dpl.CHANNELS)):
            lin = getattr(lp, f"lin{i}").model[1]
            lin.weight.copy_(part.reshape(lin.weight.shape).to(lin.weight.device))
    return trainer, lp


def train_lpips(trainer, ref_t, stim_t, ref_of, p0, p1, judge, steps_cap=None, seed=0):
    """train.py's loop for EPOCHS (half constant, half decay); stops after ``steps_cap`` steps.
    Returns (seconds, steps run, steps of the full run)."""
    n = len(p0)
    per_epoch = math.ceil(n / BATCH)
    total = per_epoch * EPOCHS
    n_const = EPOCHS - EPOCHS // 2
    gen = torch.Generator().manual_seed(seed)
    steps = 0
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        for epoch in range(1, EPOCHS + 1):
            order = torch.randperm(n, generator=gen).numpy()
            for s in range(0, n, BATCH):
                idx = order[s : s + BATCH]
                trainer.set_input(
                    {
                        "ref": ref_t[ref_of[p0[idx]]],
                        "p0": stim_t[p0[idx]],
                        "p1": stim_t[p1[idx]],
                        "judge": torch.from_numpy(judge[idx]).float().reshape(-1, 1, 1, 1),
                    }
                )
                trainer.optimize_parameters()
                steps += 1
                if steps_cap is not None and steps >= steps_cap:
                    return time.perf_counter() - start, steps, total
            if epoch > n_const:
                trainer.update_learning_rate(EPOCHS // 2)
    return time.perf_counter() - start, steps, total


def lpips_distances(lp, ref_t, stim_t, ref_of, which):
    lp.eval()
    out = np.zeros(len(stim_t))
    with torch.no_grad():
        for s in range(0, len(which), 256):
            idx = which[s : s + 256]
            dev = next(lp.parameters()).device
            d = lp(ref_t[ref_of[idx]].to(dev), stim_t[idx].to(dev))
            out[idx] = d.reshape(-1).cpu().numpy()
    return out


# ------------------------------------------------------------------------------ parts


def shared_part(args, scratch: Path) -> dict:
    n_refs = math.ceil(args.triplets / 15)
    log(f"data: {n_refs} references x 6 codec versions")
    refs, dists = study_set(n_refs)
    stimuli = dists.reshape(-1, PATCH, PATCH, 3)
    ref_of = np.repeat(np.arange(n_refs), 6)
    ref_id, p0, p1 = triplets_shared(n_refs)
    ref_id, p0, p1 = ref_id[: args.triplets], p0[: args.triplets], p1[: args.triplets]
    net = dpl.load_dpl("stlpips-alex")
    heads = net.weights()
    log("observer: φ of every stimulus (setup, not timed)")
    phi_setup = feature_cache.compute_stimulus_features(net, refs, stimuli, ref_of)
    n_p0, n_p1, gap = observer_votes(phi_setup[p0], phi_setup[p1], heads)
    judge = n_p1 / (n_p0 + n_p1)
    train, test = fitting.split_by_group(ref_id, test_fraction=TEST_FRACTION, seed=0)
    lr = 2e-2 * float(heads.mean())
    out = {"triplets": int(len(p0)), "train_triplets": int(train.sum()),
           "test_triplets": int(test.sum()), "stimuli": int(len(stimuli)),
           "votes": int((n_p0 + n_p1).sum()), "lr": lr}  # fmt: skip

    log("ours: cold cache")
    ours_s, w, phi, computed, out["ours_split_s"] = fit_ours(
        refs, stimuli, ref_of, p0, p1, judge, train, scratch / "features", lr
    )
    assert computed == len(stimuli)
    np.testing.assert_allclose(phi, phi_setup, rtol=1e-4, atol=1e-6)
    d = phi @ w
    out["ours_s"] = ours_s
    out["afc_ours"] = scoring.score_2afc(d[p0[test]], d[p1[test]], judge[test])
    out["afc_start_heads"] = scoring.score_2afc(
        (phi @ heads)[p0[test]], (phi @ heads)[p1[test]], judge[test]
    )
    out["afc_observer"] = scoring.score_2afc(np.zeros(test.sum()), gap[test], judge[test])
    out["afc_ours_ci95"] = list(scoring.bootstrap_2afc(d[p0[test]], d[p1[test]], judge[test]))
    log(f"ours: {ours_s:.1f} s, test 2AFC {out['afc_ours']:.4f}")

    log("ours: warm cache, new seed")
    refit_s, w2, _, computed, out["refit_split_s"] = fit_ours(
        refs, stimuli, ref_of, p0, p1, judge, train, scratch / "features", lr, seed=1
    )
    assert computed == 0
    out["refit_s"] = refit_s
    d2 = phi @ w2
    out["afc_refit"] = scoring.score_2afc(d2[p0[test]], d2[p1[test]], judge[test])
    log(f"refit: {refit_s:.2f} s")

    if not args.skip_trainer:
        ref_t, stim_t = dpl.to_tensor(refs), dpl.to_tensor(stimuli)
        trainer, lp = make_trainer(lr)
        tp0, tp1, tj = p0[train], p1[train], judge[train]
        cap = args.trainer_steps
        log(f"lpips.Trainer: {math.ceil(len(tp0) / BATCH) * EPOCHS} steps" +
            (f", timing the first {cap}" if cap else ""))  # fmt: skip
        secs, steps, total = train_lpips(trainer, ref_t, stim_t, ref_of, tp0, tp1, tj, cap)
        out["lpips_trainer_s"] = secs * total / steps
        out["lpips_trainer_steps"] = total
        if steps < total:
            out["lpips_trainer_measured_steps"] = steps
            out["lpips_trainer_measured_s"] = secs
            out["lpips_trainer_extrapolated"] = True
        which = np.unique(np.concatenate([p0[test], p1[test]]))
        if steps < total:
            # The trainer cannot finish here: compare 2AFC on a subset both sides train on in
            # full (10 epochs), scored on the whole test split.
            sub = train & (ref_id < _nth_train_ref(ref_id, train, args.afc_subset_refs))
            log(f"lpips.Trainer: 10 epochs on {int(sub.sum())} triplets for its 2AFC")
            trainer, lp = make_trainer(lr)
            train_lpips(trainer, ref_t, stim_t, ref_of, p0[sub], p1[sub], judge[sub])
            fit = fitting.fit_weights(
                phi[p0[sub]], phi[p1[sub]], judge[sub], epochs=EPOCHS, lr=lr, init=heads
            )
            ds = phi @ fit.weights
            out["afc_subset_train_triplets"] = int(sub.sum())
            out["afc_ours_subset"] = scoring.score_2afc(ds[p0[test]], ds[p1[test]], judge[test])
            dt = lpips_distances(lp, ref_t, stim_t, ref_of, which)
            out["afc_lpips_trainer"] = scoring.score_2afc(dt[p0[test]], dt[p1[test]], judge[test])
            out["afc_delta_pts"] = 100 * (out["afc_ours_subset"] - out["afc_lpips_trainer"])
        else:
            dt = lpips_distances(lp, ref_t, stim_t, ref_of, which)
            out["afc_lpips_trainer"] = scoring.score_2afc(dt[p0[test]], dt[p1[test]], judge[test])
            out["afc_delta_pts"] = 100 * (out["afc_ours"] - out["afc_lpips_trainer"])
        out["speedup"] = out["lpips_trainer_s"] / ours_s
        log(f"lpips.Trainer: {out['lpips_trainer_s']:.0f} s, "
            f"test 2AFC {out['afc_lpips_trainer']:.4f}")  # fmt: skip

    if not args.skip_score:
        out.update(score_part(refs, stimuli, ref_of, p0, p1, judge, n=10_000))
    return out


def _nth_train_ref(ref_id, train, k: int) -> int:
    """The reference id just past the first ``k`` training references."""
    refs = np.unique(ref_id[train])
    return int(refs[min(k, len(refs)) - 1]) + 1


def score_part(refs, stimuli, ref_of, p0, p1, judge, n: int) -> dict:
    """Every registry metric on the first ``n`` triplets (fewer if the set is smaller)."""
    p0, p1, judge = p0[:n], p1[:n], judge[:n]
    used = np.unique(np.concatenate([p0, p1]))
    pos = np.full(len(stimuli), -1)
    pos[used] = np.arange(len(used))
    start = time.perf_counter()
    scores, unavailable = {}, {}
    for name, distance in metrics.METRICS.items():
        try:
            d = np.asarray(distance(refs[ref_of[used]], stimuli[used]))
        except dpl.BackboneUnavailable as error:
            unavailable[name] = str(error)
            continue
        scores[name] = scoring.score_2afc(d[pos[p0]], d[pos[p1]], judge)
    secs = time.perf_counter() - start
    log(f"score: {len(p0)} triplets, {len(used)} stimuli, {secs:.1f} s: {scores}")
    return {"score_10k_s": secs, "score_triplets": int(len(p0)), "score_afc": scores,
            "score_unavailable": sorted(unavailable)}  # fmt: skip


def unshared_part(args, scratch: Path) -> dict:
    """No triplet shares an image: each has its own reference and two own distortions."""
    n = args.unshared
    refs, dists = study_set(n, seed=7)
    rng = np.random.default_rng(3)
    pick = np.stack([rng.choice(6, 2, replace=False) for _ in range(n)])
    stimuli = np.concatenate([dists[np.arange(n), pick[:, 0]], dists[np.arange(n), pick[:, 1]]])
    ref_of = np.concatenate([np.arange(n), np.arange(n)])
    p0, p1 = np.arange(n), np.arange(n, 2 * n)
    judge = rng.random(n)
    train = np.ones(n, bool)
    lr = 2e-2 * float(dpl.load_dpl("stlpips-alex").weights().mean())
    ours_s, *_ = fit_ours(refs, stimuli, ref_of, p0, p1, judge, train, scratch / "unshared", lr)
    trainer, _ = make_trainer(lr)
    ref_t, stim_t = dpl.to_tensor(refs), dpl.to_tensor(stimuli)
    cap = args.trainer_steps
    secs, steps, total = train_lpips(trainer, ref_t, stim_t, ref_of, p0, p1, judge, cap)
    trainer_s = secs * total / steps
    log(f"unshared {n}: ours {ours_s:.1f} s, trainer {trainer_s:.0f} s")
    out = {"unshared_triplets": n, "unshared_ours_s": ours_s, "unshared_trainer_s": trainer_s,
           "speedup_unshared": trainer_s / ours_s}  # fmt: skip
    if steps < total:
        out["unshared_trainer_measured_steps"] = steps
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triplets", type=int, default=20_000)
    parser.add_argument("--unshared", type=int, default=1_000, help="BAPPS-shaped set size")
    parser.add_argument("--trainer-steps", type=int, default=None,
                        help="time only this many lpips.Trainer steps and extrapolate")  # fmt: skip
    parser.add_argument("--afc-subset-refs", type=int, default=12,
                        help="with --trainer-steps: training references of the 2AFC comparison")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="600 triplets, 200 unshared, 5 trainer steps, 2 subset refs")  # fmt: skip
    parser.add_argument("--skip-trainer", action="store_true")
    parser.add_argument("--skip-unshared", action="store_true")
    parser.add_argument("--skip-score", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.triplets, args.unshared = 600, 200
        args.trainer_steps = args.trainer_steps or 5
        args.afc_subset_refs = 2
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="twoafc-bench-fit-") as tmp:
        out = shared_part(args, Path(tmp))
        if not (args.skip_unshared or args.skip_trainer):
            out.update(unshared_part(args, Path(tmp)))
    out["machine"] = {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
