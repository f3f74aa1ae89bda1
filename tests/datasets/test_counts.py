"""One vote vocabulary (cast, practice, sentinel, repeat, regular, counted, left out), computed
by rating.selectors.vote_counts and shown the same in the snapshot JSON, the dataset card, the
admin, the pages and the results report."""

import ast
import json
import re
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from datasets import services
from datasets.models import Snapshot
from rating.models import Vote
from rating.selectors import vote_counts
from studies.services import study_counts
from tests.conftest import make_study

pytestmark = pytest.mark.django_db

PLATFORM = Path(__file__).resolve().parents[2] / "platform"


def by_hand(study, counted_sessions) -> dict:
    """The counts from the vote rows, one kind at a time (no shared code with the selector)."""
    votes = Vote.objects.filter(trial__session__study=study)
    kinds = {kind: votes.filter(trial__kind=kind).count()
             for kind in ("practice", "sentinel", "repeat", "regular")}  # fmt: skip
    counted = votes.filter(trial__kind="regular", trial__session__in=counted_sessions).count()
    return {"cast": votes.count(), **kinds, "counted": counted,
            "left_out": kinds["regular"] - counted}  # fmt: skip


def page_counts(html: str) -> dict:
    """``data-count`` cells of the first counts table on a page."""
    table = html[html.index('<table class="counts">') :]
    table = table[: table.index("</table>")]
    return {k: int(v) for k, v in re.findall(r'data-count="(\w+)">(\d+)<', table)}


def test_vote_counts_follow_their_rules(counted_study):
    counts = vote_counts(counted_study)
    counted = counted_study.sessions.filter(flagged=False)
    assert counts == by_hand(counted_study, counted)
    # Every kind is present, so a count taken from the wrong rule cannot pass unnoticed.
    assert all(counts[k] > 0 for k in ("practice", "sentinel", "repeat", "counted", "left_out"))
    assert counts["cast"] == sum(counts[k] for k in ("practice", "sentinel", "repeat", "regular"))
    assert counts["regular"] == counts["counted"] + counts["left_out"]
    # With flagged raters kept, nothing is left out; up_to stops at a vote id.
    assert vote_counts(counted_study, include_flagged=True)["left_out"] == 0
    first = Vote.objects.order_by("pk").first()
    assert vote_counts(counted_study, up_to=first.pk)["cast"] == 1


def test_studies_never_import_the_apps_built_on_them():
    """studies is the bottom layer: rating, quality, datasets and analytics build on it."""
    above = {"rating", "quality", "datasets", "analytics"}
    for path in (PLATFORM / "studies").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                assert name.split(".")[0] not in above, f"{path.name} imports {name}"


def test_study_counts_are_what_generation_made(counted_study):
    assert study_counts(counted_study) == {"stimuli": 2 * 2 * 3, "triplets": 12}


def test_the_snapshot_json_card_pages_admin_and_report_show_the_same_counts(
    counted_study, admin_client, eager_celery, django_capture_on_commit_callbacks
):
    counts = vote_counts(counted_study)
    with django_capture_on_commit_callbacks(execute=True):
        snapshot = services.freeze(counted_study, enqueue=lambda pk: services.build_snapshot(pk))
    snapshot.refresh_from_db()
    assert snapshot.is_ready and snapshot.vote_counts == counts
    # The snapshot's JSON, on the web and in the API.
    assert admin_client.get(f"/datasets/{snapshot.name}/files.json").json()["votes"] == counts
    assert services.describe(snapshot)["votes"] == counts
    # The dataset card: one table row per count, with its rule.
    with default_storage.open(snapshot.storage_prefix + "DATASET.md") as handle:
        card = handle.read().decode()
    for key, label in (("cast", "cast"), ("regular", "regular"), ("counted", "counted"),
                       ("left_out", "left out"), ("practice", "practice")):  # fmt: skip
        assert re.search(rf"^\| {label} \| {counts[key]} \| \w", card, re.M), label
    # votes.csv: every cast vote but practice; clic.csv: the counted ones.
    with default_storage.open(snapshot.storage_prefix + "votes.csv") as handle:
        rows = handle.read().decode().strip().splitlines()[1:]
    with default_storage.open(snapshot.storage_prefix + "clic.csv") as handle:
        clic = handle.read().decode().strip().splitlines()
    assert (len(rows), len(clic)) == (counts["cast"] - counts["practice"], counts["counted"])
    # The pages: the snapshot, the study's snapshots (now and per snapshot), the list.
    assert page_counts(admin_client.get(snapshot.get_absolute_url()).text) == counts
    download = admin_client.get(f"/studies/{counted_study.slug}/download/").text
    assert page_counts(download) == counts
    main = {k: counts[k] for k in ("cast", "regular", "counted", "left_out")}
    row = download[download.index(snapshot.get_absolute_url()) :]
    assert dict(re.findall(r'data-count="(\w+)">(\d+)<', row[: row.index("</tr>")])) == {
        k: str(v) for k, v in main.items()
    }
    # The admin's list and page.
    listing = admin_client.get("/admin/datasets/snapshot/").text
    for key, label in (("cast", "cast"), ("regular", "regular"), ("counted", "counted"),
                       ("left_out", "left out")):  # fmt: skip
        assert f">{label} {counts[key]}</span>" in listing, label
    change = admin_client.get(f"/admin/datasets/snapshot/{snapshot.pk}/change/").text
    assert f"<tr><th>left out</th><td>{counts['left_out']}</td>" in change
    # The results report (and its download) and the studies page: the same numbers, now.
    assert page_counts(admin_client.get(f"/studies/{counted_study.slug}/results/").text) == counts
    report = admin_client.get(f"/studies/{counted_study.slug}/results/report.html").text
    assert page_counts(report) == counts
    assert f"{counts['counted']} regular votes (the counted votes)" in report
    studies = admin_client.get("/studies/").text
    assert {k: int(v) for k, v in re.findall(r'data-count="(\w+)">(\d+)<', studies)} == main


def test_the_snapshot_command_prints_the_counts(counted_study, capsys):
    call_command("snapshot", counted_study.slug)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["votes"] == vote_counts(counted_study)


# --- a study without counted votes cannot be frozen -------------------------------------


@pytest.fixture
def unvoted(db):
    return make_study(photos=("astronaut",))


def test_freezing_a_study_without_votes_is_refused_everywhere(
    unvoted, admin_client, client, django_user_model, capsys
):
    with pytest.raises(services.FreezeRefused, match="Test study has no votes yet"):
        services.freeze(unvoted)
    # The page says so instead of offering the button; a POST anyway gets the message back.
    page = admin_client.get(f"/studies/{unvoted.slug}/download/").text
    assert "Nothing to freeze: Test study has no votes yet." in page
    assert "Freeze snapshot" not in page
    response = admin_client.post(f"/studies/{unvoted.slug}/freeze/", follow=True)
    assert response.redirect_chain[-1][0] == f"/studies/{unvoted.slug}/download/"
    assert "Nothing to freeze: Test study has no votes yet." in response.text
    # The admin's add form shows it as a form error.
    added = admin_client.post(
        "/admin/datasets/snapshot/add/",
        {"study": unvoted.pk, "license": "", "citation": "", "access": "private"},
    )
    assert added.status_code == 200 and "Nothing to freeze" in added.text
    # The API: 409 with a detail and a stable reason.
    from datasets.models import ApiToken
    from studies.access import make_researcher

    user = django_user_model.objects.create_user("ada")
    make_researcher(user)
    _, raw = ApiToken.issue(user)
    api = client.post(f"/api/datasets/studies/{unvoted.slug}/snapshots", "{}",
                      content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}")  # fmt: skip
    assert api.status_code == 409
    assert api.json() == {
        "detail": "Nothing to freeze: Test study has no votes yet.",
        "reason": "no-counted-votes",
    }
    # The command: one line.
    with pytest.raises(CommandError, match="^Nothing to freeze: Test study has no votes yet.$"):
        call_command("snapshot", unvoted.slug)
    assert not Snapshot.objects.exists()


def test_freezing_only_left_out_votes_is_refused_with_the_reason(counted_study):
    counted_study.sessions.update(flagged=True)  # every rater left out
    with pytest.raises(services.FreezeRefused, match="none of the .* regular votes .* counts"):
        services.freeze(counted_study)
    assert not Snapshot.objects.exists()


def test_a_building_snapshot_shows_its_progress_without_a_stray_space(counted_study, admin_client):
    snapshot = services.freeze(counted_study)
    Snapshot.objects.filter(pk=snapshot.pk).update(status="running", done=550, total=1926)
    html = admin_client.get(snapshot.get_absolute_url()).text
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    assert "Building: 550/1926 files" in text
