"""Pages need nothing from the internet: the API docs load Swagger UI from our own static
files, and every page has the site's icon (the browser test checks the same in Chromium)."""

import re

import pytest

pytestmark = pytest.mark.django_db

ICON = '<link rel="icon" href="/static/twoafc/favicon.svg" type="image/svg+xml">'


def assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_the_api_docs_load_swagger_ui_from_our_static_files(client):
    page = client.get("/api/docs")
    assert page.status_code == 200
    found = assets(page.text)
    assert "/static/ninja/swagger-ui-bundle.js" in found and "/static/ninja/swagger-ui.css" in found
    for url in found:
        assert url.startswith("/"), f"{url} is not served here"
        response = client.get(url)
        assert response.status_code == 200, url
    assert ICON in page.text


def test_every_page_has_the_icon_and_browsers_find_it_where_they_look(
    client, admin_client, ready_study
):
    for html in (
        client.get("/accounts/login/").text,
        client.get("/datasets/").text,
        client.get(f"/rate/{ready_study.slug}/").text,
        admin_client.get("/studies/").text,
    ):
        assert ICON in html
    svg = client.get("/static/twoafc/favicon.svg")
    assert svg.status_code == 200 and svg["Content-Type"].startswith("image/svg+xml")
    # The admin has no icon link: browsers then ask for /favicon.ico.
    redirect = client.get("/favicon.ico")
    assert redirect.status_code == 301 and redirect["Location"] == "/static/twoafc/favicon.ico"
    ico = client.get(redirect["Location"])
    body = b"".join(ico.streaming_content) if ico.streaming else ico.content
    assert ico.status_code == 200 and body[:4] == b"\x00\x00\x01\x00"  # an ICO header
