"""A researcher's journey in Chromium: log in, freeze a snapshot (built by a real Celery worker
process), watch it build, download a file and the archive, read the results report, change
the password, log out. And the API docs, which must render with nothing from the internet.

Runs on the embedded default (SQLite file, kombu's filesystem broker) and, with DATABASE_URL
and REDIS_URL set, on PostgreSQL and Redis.
"""

import hashlib
import io
import re
import tarfile
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command

from datasets.models import Snapshot
from rating.selectors import vote_counts
from tests.datasets.conftest import make_counted_study

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]

NEW_PASSWORD = "journey-new-secret-7"


def shown_counts(page, within: str = "") -> dict[str, int]:
    """The counts table's ``data-count`` cells, as the browser shows them."""
    cells = page.locator(f"{within} table.counts td[data-count]".strip())
    return {
        cells.nth(i).get_attribute("data-count"): int(cells.nth(i).inner_text())
        for i in range(cells.count())
    }


def downloaded(page, link) -> bytes:
    """Click ``link`` (a locator) and return the bytes the browser saved."""
    with page.expect_download() as download:
        link.click()
    with open(download.value.path(), "rb") as handle:
        return handle.read()


def test_a_researcher_freezes_downloads_and_reads_the_report(
    live_server, open_page, screenshot, worker, django_capture_on_commit_callbacks, capsys
):
    study = make_counted_study(django_capture_on_commit_callbacks)
    counts = vote_counts(study)
    call_command("researcher", "ada", "--create")
    password = re.search(r"\(shown once\): (\S+)\.", capsys.readouterr().out).group(1)

    # Log in through the site's own page (not the admin's).
    page = open_page(live_server.url + "/")
    assert urlsplit(page.url).path == "/accounts/login/"
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill(password)
    screenshot(page, "01-login")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/studies/")
    assert page.locator("header .who").inner_text() == "ada (researcher)"
    screenshot(page, "02-studies")

    # Freeze a snapshot of the study; a real worker process builds it.
    page.get_by_role("link", name="Snapshots").click()
    page.wait_for_url(f"**/studies/{study.slug}/download/")
    page.locator("table.counts").wait_for()
    assert shown_counts(page) == counts
    page.get_by_label("License").fill("CC-BY-4.0")
    screenshot(page, "03-download-page")
    page.get_by_role("button", name="Freeze snapshot").click()
    page.wait_for_url(f"**/datasets/{study.slug}-v1/")
    first_status = page.locator(".status").inner_text()
    assert re.fullmatch(
        r"Queued: waiting for a worker|Building: \d+/\d+ files|Ready", first_status
    ), first_status
    screenshot(page, "04-snapshot-frozen")
    # The page reloads itself every 2 s until the build is done.
    page.get_by_role("link", name="Download all (.tar)").wait_for(timeout=60_000)
    assert page.locator(".status").inner_text() == "Ready"
    screenshot(page, "05-snapshot-ready")
    snapshot = Snapshot.objects.get(name=f"{study.slug}-v1")
    assert snapshot.created_by.username == "ada" and snapshot.license == "CC-BY-4.0"
    frozen = shown_counts(page)
    assert frozen == snapshot.vote_counts == counts

    # Download one file and the whole archive, and check their bytes.
    content_hash = page.locator("code").first.inner_text()
    assert content_hash == snapshot.content_hash
    card = downloaded(page, page.get_by_role("link", name="DATASET.md", exact=True).first)
    listed = page.locator("tr", has=page.get_by_role("link", name="DATASET.md", exact=True))
    assert hashlib.sha256(card).hexdigest() == listed.locator("code").inner_text()
    assert f"| counted | {counts['counted']} |" in card.decode()
    archive = downloaded(page, page.get_by_role("link", name="Download all (.tar)"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        files = {
            member.name.removeprefix(f"{snapshot.name}/"): tar.extractfile(member).read()
            for member in tar.getmembers()
            if member.isfile()
        }
    assert len(files) == snapshot.files_count and files["DATASET.md"] == card
    assert hashlib.sha256(files["MANIFEST"]).hexdigest() == content_hash
    for line in files["MANIFEST"].decode().splitlines():
        sha, path = line.split("  ", 1)
        assert hashlib.sha256(files[path]).hexdigest() == sha, path

    # The report: its counts are the snapshot's (no vote came in since the freeze).
    # Built inside the request for now (scores and curves of every metric): it takes a while.
    page.get_by_role("link", name="results report").click(timeout=120_000)
    page.wait_for_url(f"**/studies/{study.slug}/results/", timeout=120_000)
    page.get_by_role("heading", name="2AFC agreement with raters").wait_for()
    assert shown_counts(page) == frozen
    assert page.locator("figure svg").count() >= 5
    screenshot(page, "06-report")
    for i in range(page.locator("figure").count()):
        figure = page.locator("figure").nth(i)
        figure.scroll_into_view_if_needed()
        # Each figure at the size a reader sees it, to check its labels are legible.
        figure.screenshot(path=str(screenshot(page, f"07-figure-{i}", full_page=False)))

    # Change the password, then log out.
    page.get_by_role("link", name="Change password").click()
    page.get_by_label("Old password").fill(password)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password confirmation").fill(NEW_PASSWORD)
    screenshot(page, "08-password-change")
    page.get_by_role("button", name="Change password").click()
    page.wait_for_url("**/accounts/password_change/done/")
    screenshot(page, "09-password-changed")
    page.get_by_role("button", name="Log out").click()
    page.get_by_text("You are logged out").wait_for()
    assert page.locator("header .who").count() == 0
    screenshot(page, "10-logged-out")
    page.goto(live_server.url + f"/studies/{study.slug}/download/")
    assert urlsplit(page.url).path == "/accounts/login/"
    # Only the new password opens the account now.
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Snapshots: Counted study").wait_for()


def test_the_api_docs_render_offline_with_the_sites_icon(live_server, open_page, screenshot):
    """Any request to another host is refused and fails the test."""
    here = urlsplit(live_server.url).netloc
    outside = []

    def only_here(route):
        if urlsplit(route.request.url).netloc == here:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page = open_page(None)
    page.route("**/*", only_here)
    page.goto(live_server.url + "/api/docs")
    page.locator(".swagger-ui .info .title").get_by_text("twoafc").wait_for()
    page.locator(".opblock-summary-path", has_text="/api/datasets/snapshots").first.wait_for()
    assert page.locator(".opblock").count() >= 8
    icon = page.evaluate(
        """() => new Promise(done => {
             const image = new Image();
             image.onload = () => done([image.naturalWidth, image.src]);
             image.onerror = () => done([0, image.src]);
             image.src = document.querySelector('link[rel="icon"]').href;
           })"""
    )
    assert icon[0] > 0 and icon[1].endswith("/static/twoafc/favicon.svg"), icon
    screenshot(page, "api-docs")
    # Pages without an icon link (the admin): the browser's /favicon.ico is there too.
    ico = page.request.get(live_server.url + "/favicon.ico")
    assert ico.ok and ico.headers["content-type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    assert outside == []
