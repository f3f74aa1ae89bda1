"""Researchers: non-staff users who freeze snapshots and read results, with their own login,
logout and password pages (never the admin's)."""

import re

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


def made_researcher(capsys, name="ada") -> str:
    """``manage.py researcher NAME --create``; returns the password it printed."""
    call_command("researcher", name, "--create")
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{name} is a researcher; password (shown once): ")
    return re.search(r"password \(shown once\): (\S+)\.", line).group(1)


def test_the_researchers_group_is_made_by_a_migration():
    group = Group.objects.get(name="Researchers")
    assert sorted(group.permissions.values_list("content_type__app_label", "codename")) == [
        ("datasets", "add_snapshot"),
        ("datasets", "view_snapshot"),
    ]


def test_pages_for_researchers_send_to_a_login_page_in_the_sites_look(client, ready_study):
    for page in ("/", "/studies/", f"/studies/{ready_study.slug}/download/",
                 f"/studies/{ready_study.slug}/results/"):  # fmt: skip
        response = client.get(page, follow=True)
        final = response.redirect_chain[-1][0]
        assert final.startswith("/accounts/login/"), (page, final)
        assert response.status_code == 200
    html = response.text
    assert 'href="/static/twoafc/staff.css"' in html and 'rel="icon"' in html
    assert '<input type="text" name="username"' in html and "Log in</button>" in html
    assert 'name="next" value="/studies/test-study/results/"' in html


@pytest.fixture
def plain_study(db):
    """A study not generated yet: its report is quick to build (the counts test and the
    browser journey read full reports)."""
    from tests.conftest import make_study

    return make_study(name="Plain study", photos=("astronaut",))


def test_a_researcher_logs_in_reads_results_changes_the_password_and_logs_out(
    client, plain_study, capsys
):
    password = made_researcher(capsys)
    results = f"/studies/{plain_study.slug}/results/"
    response = client.post(
        "/accounts/login/", {"username": "ada", "password": password, "next": results}
    )
    assert response.status_code == 302 and response["Location"] == results
    page = client.get(results)
    assert page.status_code == 200 and "2AFC agreement with raters" in page.text
    # The header says who is logged in and what they can open.
    header = page.text[page.text.index("<header>") : page.text.index("</header>")]
    assert re.search(r'class="who">ada \(researcher\)<', header)
    for link in ('href="/studies/"', 'href="/datasets/"', 'href="/api/docs"',
                 'href="/accounts/password_change/"', 'action="/accounts/logout/"'):  # fmt: skip
        assert link in header, link
    assert "/admin/" not in header  # researchers never see the admin
    assert client.get(results + "report.html").status_code == 200
    # Someone else's private snapshot of the study is counted, not offered.
    from datasets.models import Snapshot

    theirs = Snapshot.objects.create(study=plain_study, number=1, name="plain-study-v1")
    download = client.get(f"/studies/{plain_study.slug}/download/").text
    assert theirs.get_absolute_url() not in download
    assert "1 more snapshot of this study is private to whoever froze it." in download
    # A plain login lands on the studies page, which links to both pages of each study.
    client.logout()
    landed = client.post("/accounts/login/", {"username": "ada", "password": password}, follow=True)
    assert landed.redirect_chain[-1][0] == "/studies/"
    assert f'href="{results}"' in landed.text and "Plain study" in landed.text
    # Change the password on the site's own page.
    form = client.get("/accounts/password_change/")
    assert form.status_code == 200 and 'href="/static/twoafc/staff.css"' in form.text
    changed = client.post(
        "/accounts/password_change/",
        {"old_password": password, "new_password1": "a-new-secret-9", "new_password2": "a-new-secret-9"},
        follow=True,
    )  # fmt: skip
    assert changed.redirect_chain[-1][0] == "/accounts/password_change/done/"
    assert "Password changed" in changed.text
    # Log out (a POST, from the header's button).
    out = client.post("/accounts/logout/")
    assert out.status_code == 200 and "You are logged out" in out.text
    assert client.get(results).status_code == 302
    assert not client.login(username="ada", password=password)
    assert client.login(username="ada", password="a-new-secret-9")


def test_someone_who_is_not_a_researcher_is_told_how_to_become_one(client, ready_study, capsys):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("bob", password="pw-bob-123")
    client.force_login(user)
    for page in (f"/studies/{ready_study.slug}/results/",
                 f"/studies/{ready_study.slug}/results/report.html",
                 f"/studies/{ready_study.slug}/download/"):  # fmt: skip
        response = client.get(page)
        assert response.status_code == 403, page
        assert "python manage.py researcher bob" in response.text
    header = client.get("/studies/").text.split("</header>")[0]
    assert 'class="who">bob<' in header  # neither staff nor researcher
    call_command("researcher", "bob")
    assert "bob is a researcher." in capsys.readouterr().out
    assert client.get(f"/studies/{ready_study.slug}/download/").status_code == 200


def test_the_researcher_command_names_bad_input(db):
    with pytest.raises(CommandError, match="^no user 'nobody' \\(use --create to add one\\)$"):
        call_command("researcher", "nobody")


def test_staff_see_the_admin_link(admin_client):
    header = admin_client.get("/studies/").text.split("</header>")[0]
    assert 'class="who">admin (staff)<' in header and 'href="/admin/"' in header
