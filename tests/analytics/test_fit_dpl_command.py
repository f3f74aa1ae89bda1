"""fit_dpl on votes cast by bots through the HTTP API: held-out 2AFC, lpips-format weights, results page."""

import json

import pytest
import torch
from django.core.management import CommandError, call_command

from analytics.lpips_format import load_lpips_weights
from analytics.models import FitReport
from rating.models import RaterSession, Vote
from tests.conftest import generate, make_study

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rated_study(live_server, django_capture_on_commit_callbacks):
    study = make_study(
        photos=("astronaut", "chelsea", "coffee"), patches_per_image=4, votes_per_triplet=2
    )
    generate(study, django_capture_on_commit_callbacks)
    call_command("simulate_raters", study.slug, "--raters", "50", "--base-url", live_server.url)
    return study


def test_bots_rate_through_the_api_until_the_study_is_full(rated_study):
    # 3 photos × 4 patches × 3 pairs = 36 triplets × 2 votes, in sessions of 10.
    assert Vote.objects.count() == 72
    assert RaterSession.objects.filter(finished_at__isnull=False).count() == 8
    assert all(t.trials.count() == 2 for t in rated_study.triplets.all())


def test_fit_dpl_json_reports_held_out_scores_and_saves_lpips_weights(rated_study, capsys):
    call_command("fit_dpl", rated_study.slug, "--json", "--epochs", "5")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["study"] == rated_study.slug and result["split"] == "test"
    assert set(result["afc"]) >= {"psnr", "ssim", "lpips-alex", "dpl"}
    for name, score in result["afc"].items():
        assert score is None or 0.0 <= score <= 1.0, name
    # torchvision's ImageNet trunk is not on this machine: reported, never faked on a random trunk.
    if result["afc"]["lpips-alex"] is None:
        assert "alexnet-owt" in result["unavailable"]["lpips-alex"]
    assert 0.5 <= result["human_ceiling"] <= 1.0
    assert result["triplets"] + result["train_triplets"] == 36
    assert result["votes"] + result["train_votes"] == 72

    weights = load_lpips_weights(result["weights"])
    assert (weights >= 0).all()
    import lpips

    model = lpips.LPIPS(
        net="alex", pretrained=True, pnet_rand=True, model_path=result["weights"], verbose=False
    )
    loaded = torch.cat([getattr(model, f"lin{i}").model[1].weight.flatten() for i in range(5)])
    assert torch.allclose(loaded, torch.from_numpy(weights).float())
    assert FitReport.objects.get().result == result


def test_fit_dpl_refuses_unknown_studies_and_studies_without_votes(
    db, django_capture_on_commit_callbacks
):
    with pytest.raises(CommandError, match="no study"):
        call_command("fit_dpl", "missing")
    study = make_study(photos=("astronaut",))
    with pytest.raises(CommandError, match="no votes"):
        call_command("fit_dpl", study.slug)


def test_results_page_shows_the_latest_fit(rated_study, admin_client):
    call_command("fit_dpl", rated_study.slug, "--epochs", "2", "--backbone", "random")
    page = admin_client.get(f"/studies/{rated_study.slug}/results/").content.decode()
    report = FitReport.objects.get()
    assert "human ceiling" in page and "random" in page
    assert f"{report.result['afc']['dpl']:.3f}" in page
