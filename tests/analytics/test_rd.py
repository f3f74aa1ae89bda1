"""Rate–distortion evaluation: per-image points on the real encodes, mean curves, and people's
and metrics' win-rates at matched bitrate, checked against counts made here from the votes."""

import json
import math
import re
import uuid
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest
import torch
from django.core.management import CommandError, call_command

import twoafc_codecs
from analytics import dpl, rd
from analytics.lpips_format import save_lpips_weights
from analytics.models import FitReport
from rating import services
from rating.models import RaterSession, Trial, Vote
from studies.models import Condition, Encoding, Study
from studies.services import load_pixels
from tests.conftest import generate, make_study

pytestmark = pytest.mark.django_db

JPEG_LEVELS = (20, 50, 90)
TARGET_BPP = 0.8


@pytest.fixture
def study(django_capture_on_commit_callbacks):
    """2 photos (192² crops) × 2 patches; jpeg at three qualities, jpeg and webp at 0.8 bpp: 40 triplets."""
    study = make_study(
        conditions=[("jpeg", level) for level in JPEG_LEVELS],
        crop_size=192,
        patches_per_image=2,
        votes_per_triplet=2,
        trials_per_session=20,
    )
    for codec in ("jpeg", "webp"):
        Condition.objects.create(study=study, codec=codec, target_bpp=TARGET_BPP)
    generate(study, django_capture_on_commit_callbacks)
    assert study.status == study.Status.READY, study.latest_job.error
    return study


def stimulus_on_left(trial: Trial, stimulus_id: int) -> bool:
    return (stimulus_id == trial.triplet.p1_id) == trial.p1_on_left


def prefer(codec: str):
    """A rater who picks ``codec``'s side when it is shown, else the side with more bits."""

    def side(trial: Trial) -> str:
        p0, p1 = trial.triplet.p0, trial.triplet.p1
        if codec in (p0.codec, p1.codec) and p0.codec != p1.codec:
            chosen = p0 if p0.codec == codec else p1
        else:
            chosen = p0 if p0.bpp >= p1.bpp else p1
        return "left" if stimulus_on_left(trial, chosen.pk) else "right"

    return side


def rate(study, who: str, side_of) -> RaterSession:
    session = services.start_session(study, services.Arrival(participant_id=who, tab_id=who))
    trials = session.trials.select_related("triplet__p0", "triplet__p1").order_by("index")
    for trial in trials:
        services.record_vote(
            session.token, index=trial.index, triplet_id=trial.triplet_id, side=side_of(trial),
            client_id=uuid.uuid4(), rt_ms=900.0, tab_id=who,
        )  # fmt: skip
    services.finish_session(session)
    return session


@pytest.fixture
def voted(study):
    """Two raters who prefer webp vote once on every triplet (20 trials each); a third,
    flagged, prefers jpeg and casts every triplet's second vote."""
    for i in range(2):
        rate(study, f"webp-fan-{i}", prefer("webp"))
    Study.objects.filter(pk=study.pk).update(trials_per_session=40)
    study.refresh_from_db()
    flagged = rate(study, "jpeg-fan", prefer("jpeg"))
    assert flagged.trials.count() == 40
    RaterSession.objects.filter(pk=flagged.pk).update(flagged=True)
    return study, flagged


def independent_counts(study, include_flagged: bool) -> tuple[Counter, Counter, int]:
    """Votes on cross-codec triplets at matched bpp, counted straight from Vote rows."""
    wins, votes, triplets = Counter(), Counter(), set()
    for vote in Vote.objects.filter(
        trial__session__study=study, trial__kind=Trial.Kind.REGULAR
    ).select_related("trial__session", "trial__triplet__p0", "trial__triplet__p1"):
        if vote.trial.session.flagged and not include_flagged:
            continue
        p0, p1 = vote.trial.triplet.p0, vote.trial.triplet.p1
        if p0.codec == p1.codec or abs(math.log2(p0.bpp / p1.bpp)) > 0.25:
            continue
        wins[(p1 if vote.chose_p1 else p0).codec] += 1
        votes[p0.codec] += 1
        votes[p1.codec] += 1
        triplets.add(vote.trial.triplet_id)
    return wins, votes, len(triplets)


def rows_of(result, codec, target=None):
    return [r for r in result["images"] if r["codec"] == codec and r["target_bpp"] == target]


@pytest.mark.slow  # encodes whole crops at several rates
def test_per_image_points_are_measured_on_the_whole_encoded_crop(study):
    result = rd.rd_curves(study)
    assert result["metrics"] == ["psnr", "msssim", "dpl"] and result["unavailable"] == {}
    assert result["dpl"]["model"] == "stlpips-alex trained heads"
    assert len(result["images"]) == 2 * 5 == Encoding.objects.count()
    model = dpl.load_dpl("stlpips-alex")
    for source in study.sources.all():
        crop = twoafc_codecs.center_crop(load_pixels(source.image), study.crop_size)
        rows = sorted(
            (r for r in rows_of(result, "jpeg") if r["source_id"] == source.pk),
            key=lambda r: r["level"],
        )
        assert [r["level"] for r in rows] == list(JPEG_LEVELS)
        # bpp rises with quality; PSNR and MS-SSIM rise and DPL falls with bpp.
        for name, sign in (("bpp", 1), ("psnr", 1), ("msssim", 1), ("dpl", -1)):
            values = [sign * r[name] for r in rows]
            assert values == sorted(values) and len(set(values)) == 3, (name, values)
        for row in rows:
            assert (row["unit"], row["dpl_unit"], row["msssim_window"]) == ("crop", "crop", 11)
            encoding = Encoding.objects.get(source=source, condition_id=row["condition_id"])
            assert row["bpp"] == encoding.bpp
            # Re-encode the crop here (jpeg is deterministic): same pixels, same numbers.
            decoded = twoafc_codecs.encode_image(crop, "jpeg", row["level"]).decoded
            mse = np.mean((crop.astype(float) - decoded.astype(float)) ** 2)
            assert row["psnr"] == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)
            if row["level"] == JPEG_LEVELS[1]:
                with torch.no_grad():
                    expected = model(dpl.to_tensor(crop), dpl.to_tensor(decoded)).item()
                assert row["dpl"] == pytest.approx(expected, rel=1e-4)
    assert [title for title, _ in rd.rd_figures(result)] == [
        "PSNR (dB) against bitrate",
        "MS-SSIM against bitrate",
        "DPL distance against bitrate",  # no votes yet: no win-rate figure
    ]


def test_mean_curves_average_the_images_of_each_condition(study):
    result = rd.rd_curves(study, with_dpl=False)
    assert result["metrics"] == ["psnr", "msssim"] and "dpl" in result["unavailable"]
    jpeg = result["curves"]["jpeg"]
    assert [p["bpp"] for p in jpeg] == sorted(p["bpp"] for p in jpeg)
    levels = [p for p in jpeg if p["target_bpp"] is None]
    assert [p["level"] for p in levels] == list(JPEG_LEVELS)
    assert [p["psnr"] for p in levels] == sorted(p["psnr"] for p in levels)
    for point in jpeg + result["curves"]["webp"]:
        rows = [r for r in result["images"] if r["condition_id"] == point["condition_id"]]
        assert point["images"] == len(rows) == 2
        assert point["bpp"] == pytest.approx(np.mean([r["bpp"] for r in rows]))
        assert point["psnr"] == pytest.approx(np.mean([r["psnr"] for r in rows]))
    # The rate-targeted conditions meet at one target and are ranked there.
    (target,) = result["targets"]
    assert target["target_bpp"] == TARGET_BPP and set(target["bpp"]) == {"jpeg", "webp"}
    for bpp in target["bpp"].values():
        assert abs(bpp - TARGET_BPP) / TARGET_BPP < 0.06
    psnr = {c: p["psnr"] for c, ps in result["curves"].items() for p in ps if p["target_bpp"]}
    assert target["ranking"]["psnr"] == sorted(psnr, key=psnr.get, reverse=True)


def test_win_rates_count_the_votes_of_matched_cross_codec_triplets(voted):
    study, flagged = voted
    rows = rd.image_rows(study, None)
    for include_flagged in (False, True):
        wins, votes, triplets = independent_counts(study, include_flagged)
        assert triplets >= 4 and votes["webp"] > 0  # at least jpeg vs webp at 0.8 bpp
        matched = rd.matched_preferences(study, rows, ["psnr"], include_flagged=include_flagged)
        assert matched["triplets"] == triplets
        assert matched["votes"] == sum(votes.values()) // 2
        assert matched["raters"] == ("all" if include_flagged else "unflagged")
        assert set(matched["win_rate"]) == set(votes)
        for codec, w in matched["win_rate"].items():
            assert (w["wins"], w["votes"]) == (wins[codec], votes[codec])
            assert w["rate"] == wins[codec] / votes[codec]
            low, high = w["interval"]
            assert 0 <= low <= w["rate"] <= high <= 1
        (target,) = matched["by_target"]
        at_target = Vote.objects.filter(
            trial__kind=Trial.Kind.REGULAR,
            trial__triplet__p0__target_bpp=TARGET_BPP,
            trial__triplet__p1__target_bpp=TARGET_BPP,
        )
        if not include_flagged:
            at_target = at_target.filter(trial__session__flagged=False)
        assert target["target_bpp"] == TARGET_BPP
        assert target["win_rate"]["webp"]["votes"] == at_target.count() == 4 * (1 + include_flagged)
        (pair,) = matched["pairs"]
        assert (pair["a"], pair["b"]) == ("jpeg", "webp")
        assert pair["wins"] == wins["jpeg"] and pair["votes"] == votes["webp"]
        # Counted raters all prefer webp; only the flagged one ever chose jpeg over it.
        webp = matched["win_rate"]["webp"]["rate"]
        if include_flagged:
            assert webp == 0.5  # each matched triplet: one webp fan, one jpeg fan
        else:
            assert webp == 1.0
            assert rd.rankings(matched, ["psnr"])["ranking"]["people"] == ["webp", "jpeg"]


def test_metrics_vote_on_the_same_matched_comparisons(voted):
    study, _ = voted
    result = rd.rd_curves(study, with_dpl=False)
    scores = {(r["source_id"], r["condition_id"]): r for r in result["images"]}
    expected = Counter()
    n = 0
    for triplet in rd.voted_triplets(study):
        p0, p1 = triplet.p0, triplet.p1
        if p0.codec == p1.codec or not rd.is_matched(p0.bpp, p1.bpp):
            continue
        votes = triplet.n_p0 + triplet.n_p1
        s0 = scores[(triplet.patch.source_id, p0.condition_id)]["psnr"]
        s1 = scores[(triplet.patch.source_id, p1.condition_id)]["psnr"]
        expected[(p0 if s0 > s1 else p1).codec] += votes
        n += votes
    webp = result["matched"]["win_rate"]["webp"]
    assert webp["votes"] == n
    assert webp["metric_rate"]["psnr"] == pytest.approx(expected["webp"] / n)
    ranking = result["ranking"]["psnr"]
    assert ranking == sorted(["jpeg", "webp"], key=lambda c: -expected[c])
    agreement = result["pair_agreement"]["psnr"]
    assert agreement["pairs"] == 1
    assert agreement["agree"] == int(ranking[0] == "webp")


def test_dpl_uses_the_newest_fit_and_reports_a_missing_file(study, tmp_path):
    heads = dpl.load_dpl("stlpips-alex").weights()
    save_lpips_weights(2 * heads, tmp_path / "doubled.pth")
    FitReport.objects.create(
        study=study, backbone="stlpips-alex", loss="rank", result={},
        weights_path=str(tmp_path / "doubled.pth"),
    )  # fmt: skip
    FitReport.objects.create(
        study=study, backbone="random", loss="rank", result={}, weights_path="random.pth"
    )
    choice = rd.choose_dpl(study)  # the random-trunk fit is newer but not reproducible
    assert choice.label.startswith("DPL fit") and choice.weights.endswith("doubled.pth")
    assert np.allclose(choice.model.weights(), 2 * heads)

    FitReport.objects.create(
        study=study, backbone="stlpips-alex", loss="rank", result={},
        weights_path=str(tmp_path / "missing.pth"),
    )  # fmt: skip
    choice = rd.choose_dpl(study)
    assert choice.label == "stlpips-alex trained heads"
    assert np.allclose(choice.model.weights(), heads)
    assert "missing.pth" in choice.notes[0]


def test_an_encoding_that_cannot_be_decoded_is_scored_on_its_patches(study):
    encoding = Encoding.objects.filter(condition__codec="webp").first()
    encoding.data.storage.delete(encoding.data.name)
    result = rd.rd_curves(study, with_dpl=False)
    (row,) = [r for r in result["images"] if r["condition_id"] == encoding.condition_id
              and r["source_id"] == encoding.source_id]  # fmt: skip
    assert row["unit"] == "patches" and "cannot decode" in row["unit_reason"]
    # 64-pixel patches: MS-SSIM's 4 downsamplings leave room for a 3-pixel window only.
    assert row["msssim_window"] == 3
    psnr = []
    for stimulus in encoding.stimuli.select_related("patch"):
        ref = load_pixels(stimulus.patch.image).astype(float)
        mse = np.mean((ref - load_pixels(stimulus.image).astype(float)) ** 2)
        psnr.append(10 * math.log10(255**2 / mse))
    assert len(psnr) == 2 and row["psnr"] == pytest.approx(np.mean(psnr))
    others = [r for r in result["images"] if r is not row]
    assert all(r["unit"] == "crop" for r in others)


def test_figures_are_svg_one_per_metric_and_the_win_rate(voted):
    study, _ = voted
    result = rd.rd_curves(study, with_dpl=False)
    figures = rd.rd_figures(result)
    titles = [title for title, _ in figures]
    assert titles[:2] == ["PSNR (dB) against bitrate", "MS-SSIM against bitrate"]
    assert titles[2].startswith("Win-rate at matched bitrate") and len(figures) == 3
    for _, svg in figures:
        root = ET.fromstring(svg)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "jpeg" in figures[0][1] and "webp" in figures[2][1]
    # Each figure's ids are its own, and every reference points inside the same figure.
    ids = []
    for _, svg in figures:
        own = {e.get("id") for e in ET.fromstring(svg).iter() if e.get("id")}
        referenced = set(re.findall(r'(?:url\(#|href="#)([^)"]+)', svg))
        assert referenced and referenced <= own
        ids.append(own)
    assert sum(map(len, ids)) == len(set.union(*ids))


def test_without_votes_there_is_no_win_rate_figure(study):
    result = rd.rd_curves(study, with_dpl=False)
    assert result["matched"]["votes"] == 0 and result["matched"]["win_rate"] == {}
    assert [t for t, _ in rd.rd_figures(result)] == [
        "PSNR (dB) against bitrate",
        "MS-SSIM against bitrate",
    ]


def test_rd_curves_command(voted, capsys):
    study, _ = voted
    call_command("rd_curves", study.slug, "--json", "--no-dpl", "--include-flagged")
    result = json.loads(capsys.readouterr().out)
    assert result["study"] == study.slug and set(result["curves"]) == {"jpeg", "webp"}
    assert result["matched"]["raters"] == "all" and result["unavailable"] == {
        "dpl": "not asked for"
    }
    call_command("rd_curves", study.slug, "--no-dpl")
    text = capsys.readouterr().out
    assert "jpeg@20" in text and "ranking by people: webp > jpeg" in text


def test_rd_curves_command_refuses_unknown_and_unencoded_studies():
    with pytest.raises(CommandError, match="no study"):
        call_command("rd_curves", "missing")
    study = make_study(photos=("astronaut",))
    with pytest.raises(CommandError, match="no encodings"):
        call_command("rd_curves", study.slug)


def test_matching_rule_and_wilson_interval():
    assert rd.is_matched(0.5, 0.5 * 2**0.25) and not rd.is_matched(0.5, 0.5 * 2**0.26)
    assert not rd.is_matched(0.0, 0.5)
    assert rd.wilson_interval(0, 0) is None
    low, high = rd.wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    low, high = rd.wilson_interval(5, 10)
    assert low == pytest.approx(1 - high)
