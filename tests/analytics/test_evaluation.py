"""evaluate_study, the score_metrics command and the staff report on a study rated through the services."""

import json
import re
import uuid

import numpy as np
import pytest
import torch
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from analytics import lpips_format, scoring
from analytics.dpl import N_FEATURES
from analytics.evaluation import cached_evaluation, evaluate_study
from analytics.metrics import psnr_distance
from analytics.models import FitReport
from rating import services
from rating.selectors import voted_triplets
from studies.services import load_pixels

pytestmark = pytest.mark.django_db


def rate(study, who, choose, rt_ms=900.0):
    session = services.start_session(study, services.Arrival(participant_id=who, tab_id=who))
    trials = session.trials.select_related("triplet__p0", "triplet__p1").order_by("index")
    for trial in trials:
        services.record_vote(
            session.token, index=trial.index, triplet_id=trial.triplet_id, side=choose(trial),
            client_id=uuid.uuid4(), rt_ms=rt_ms, tab_id=who,
        )  # fmt: skip
    services.finish_session(session)
    session.refresh_from_db()
    return session


def careful(rng):
    """Picks the side with the higher-rate stimulus (less distorted), 1 time in 10 the other."""

    def choose(trial):
        if trial.sentinel_side:
            return trial.sentinel_side
        better = (
            "left" if trial.stimulus_on("left").bpp >= trial.stimulus_on("right").bpp else "right"
        )
        worse = "right" if better == "left" else "left"
        return worse if rng.random() < 0.1 else better

    return choose


@pytest.fixture
def rated_study(ready_study):
    """18 triplets × 2 votes: a careless rater (always left, too fast: flagged) casts 10 of
    the 36, careful raters the rest."""
    careless = rate(ready_study, "careless", lambda trial: "left", rt_ms=120)
    assert careless.flagged
    rng = np.random.default_rng(0)
    for k in range(10):
        try:
            rate(ready_study, f"careful-{k}", careful(rng))
        except services.RatingError:
            break
    return ready_study


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """No lpips trunk files: those metrics must report the file they need."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path


def test_evaluate_study_scores_every_metric_for_both_rater_sets(rated_study, torch_home):
    result = evaluate_study(rated_study, bootstrap=200)
    json.dumps(result, allow_nan=False)
    assert result["headline"] == "unflagged" and result["dpl"] is None
    everyone, unflagged = result["sets"]["all"], result["sets"]["unflagged"]
    assert (everyone["votes"], unflagged["votes"]) == (36, 26)
    assert (everyone["left_out"], unflagged["left_out"]) == (0, 1)

    for name in ("lpips-alex", "lpips-vgg", "lpips-squeeze"):
        assert str(torch_home / "hub" / "checkpoints") in result["metrics"][name]["unavailable"]
        assert name not in everyone["metrics"]
    for include_flagged, table in ((True, everyone), (False, unflagged)):
        # Recomputed from the vote counts directly.
        rows = list(voted_triplets(rated_study, include_flagged))
        n_p0 = np.array([t.n_p0 for t in rows], float)
        n_p1 = np.array([t.n_p1 for t in rows], float)
        assert table["triplets"] == len(rows)
        assert table["human_ceiling"]["score"] == pytest.approx(scoring.human_ceiling(n_p0, n_p1))
        pairs = table["breakdowns"]["codec_pair"]
        assert set(pairs) == {"jpeg vs jpeg", "jpeg vs webp"}
        assert sum(g["votes"] for g in pairs.values()) == (n_p0 + n_p1).sum()
        refs = np.stack([load_pixels(t.patch.image) for t in rows])
        d0 = psnr_distance(refs, np.stack([load_pixels(t.p0.image) for t in rows]))
        d1 = psnr_distance(refs, np.stack([load_pixels(t.p1.image) for t in rows]))
        psnr = scoring.score_2afc(d0, d1, n_p1 / (n_p0 + n_p1))
        assert table["metrics"]["psnr"]["score"] == pytest.approx(psnr)
        for name in ("psnr", "ssim", "ms-ssim", "stlpips-alex"):
            value = table["metrics"][name]
            assert result["metrics"][name]["unavailable"] is None
            assert 0 <= value["low"] <= value["score"] <= value["high"] <= 1, name
    assert everyone["human_ceiling"] != unflagged["human_ceiling"]
    assert set(everyone["breakdowns"]["source"]) == {"astronaut.png", "chelsea.png"}
    bands = unflagged["breakdowns"]["bitrate_band"]
    assert sum(g["triplets"] for g in bands.values()) == unflagged["triplets"]

    assert len(result["judges"]) == unflagged["triplets"]
    assert all(j["judge"] == j["n_p1"] / (j["n_p0"] + j["n_p1"]) for j in result["judges"])
    pooled = result["scaling"]["pooled"]
    assert set(pooled) == {"jpeg@10", "jpeg@50", "webp@30"}
    assert min(pooled, key=lambda c: pooled[c]["thurstone_jnd"]) == "jpeg@10"
    assert min(pooled, key=lambda c: pooled[c]["bradley_terry"]) == "jpeg@10"
    assert len(result["scaling"]["per_reference"]) == 6

    headline_all = evaluate_study(rated_study, bootstrap=200, include_flagged=True)
    assert headline_all["headline"] == "all" and len(headline_all["judges"]) == 18


def test_evaluate_study_scores_the_newest_fit_and_checks_names(rated_study, torch_home, tmp_path):
    weights = np.random.default_rng(0).random(N_FEATURES).astype(np.float32)
    path = lpips_format.save_lpips_weights(weights, tmp_path / "dpl.pth")
    for backbone, afc in (("stlpips-alex", 0.71), ("random", 0.6)):
        FitReport.objects.create(
            study=rated_study, backbone=backbone, loss="rank", weights_path=str(path),
            result={"afc": {"dpl": afc}, "human_ceiling": 0.8, "triplets": 6,
                    "train_triplets": 12},
        )  # fmt: skip
    # The newest fit is on a random trunk, whose seed is not stored: the one before it is scored.
    result = evaluate_study(rated_study, bootstrap=100, metrics=["psnr", "dpl"])
    assert list(result["metrics"]) == ["psnr", "dpl"]
    assert result["dpl"]["held_out_afc"] == 0.71 and result["dpl"]["backbone"] == "stlpips-alex"
    assert 0 <= result["sets"]["unflagged"]["metrics"]["dpl"]["score"] <= 1
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_study(rated_study, metrics=["psnr", "nope"])


def test_score_metrics_command(rated_study, torch_home, capsys):
    call_command(
        "score_metrics", rated_study.slug, "--json", "--bootstrap", "50", "--include-flagged"
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["headline"] == "all" and result["bootstrap"] == 50
    call_command("score_metrics", rated_study.slug, "--bootstrap", "50", "--metric", "psnr",
                 "--metric", "lpips-vgg")  # fmt: skip
    out = capsys.readouterr().out
    assert "26 votes" in out and "1 left out" in out
    assert "human ceiling" in out and "lpips-vgg      unavailable: " in out
    psnr = evaluate_study(rated_study, bootstrap=50, metrics=["psnr"])["sets"]["unflagged"]
    assert f"psnr           {psnr['metrics']['psnr']['score']:.3f} [" in out


def test_score_metrics_command_refuses_bad_input(rated_study, ready_study):
    with pytest.raises(CommandError, match="no study"):
        call_command("score_metrics", "missing")
    with pytest.raises(CommandError, match="unknown metric"):
        call_command("score_metrics", rated_study.slug, "--metric", "nope")
    with pytest.raises(CommandError, match="no DPL weights file at /nonexistent/w.pth"):
        call_command("score_metrics", rated_study.slug, "--dpl-weights", "/nonexistent/w.pth")


def test_score_metrics_command_on_a_study_without_votes(db, django_capture_on_commit_callbacks):
    from tests.conftest import make_study

    study = make_study(photos=("astronaut",))
    with pytest.raises(CommandError, match="no votes"):
        call_command("score_metrics", study.slug)


def test_results_page_and_report_download(rated_study, torch_home, client, admin_client):
    evaluation = cached_evaluation(rated_study)  # what the page shows
    psnr = evaluation["sets"]["unflagged"]["metrics"]["psnr"]
    ceiling = evaluation["sets"]["unflagged"]["human_ceiling"]
    url = f"/studies/{rated_study.slug}/results/"

    page = admin_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    # 2AFC bars, codec pairs, bitrate bands, rater quality, bpp vs PSNR / MS-SSIM / DPL
    assert html.count("<svg") >= 7
    for text in ("Codec win-rates at matched bitrate", "PSNR", "MS-SSIM",
                 "2AFC agreement with raters", "By codec pair", "Rater quality", "human ceiling",
                 "jpeg vs webp", "Condition scales", f"{psnr['score']:.3f} [{psnr['low']:.3f}, "
                 f"{psnr['high']:.3f}]", f"{ceiling['score']:.3f}", "report.html"):  # fmt: skip
        assert text in html, text

    download = admin_client.get(url + "report.html")
    assert download.status_code == 200
    assert (
        download["Content-Disposition"] == f'attachment; filename="{rated_study.slug}-report.html"'
    )
    doc = download.content.decode()
    assert doc.startswith("<!doctype html>") and doc.count("<svg") >= 4
    assert f"{psnr['score']:.3f} [{psnr['low']:.3f}" in doc
    # The svg namespaces are the only URLs: the file needs nothing from outside.
    bare = re.sub(r'xmlns(:xlink)?="http://www.w3.org/[^"]*"', "", doc)
    for external in ("<link", "<script", "src=", "/static/", "http://", "https://"):
        assert external not in bare, external

    for path in (url, url + "report.html"):
        # Not logged in: the login page; logged in but not a researcher: a 403 saying why.
        assert client.get(path)["Location"] == f"/accounts/login/?next={path}"
        user = get_user_model().objects.create_user(f"rater{len(path)}", password="x")
        client.force_login(user)
        assert client.get(path).status_code == 403
        client.logout()


def test_results_page_without_votes(ready_study, admin_client):
    html = admin_client.get(f"/studies/{ready_study.slug}/results/").content.decode()
    assert "has no votes yet" in html
