"""The production-like server itself: DEBUG is off, errors never show Django's debug pages."""

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_answers_an_unknown_page_with_a_plain_404(production_server):
    response = production_server.get("/no/such/page/")
    assert response.status_code == 404
    assert "Django" not in response.text and "Traceback" not in response.text


def test_it_sees_rows_the_test_commits(production_server, django_user_model):
    django_user_model.objects.create_user("staffer", password="pw-staffer-1", is_staff=True)
    login = production_server.get("/admin/login/")
    assert login.status_code == 200
    token = login.cookies["csrftoken"]
    response = production_server.post(
        "/admin/login/",
        data={"username": "staffer", "password": "pw-staffer-1", "csrfmiddlewaretoken": token,
              "next": "/admin/"},
        cookies=login.cookies, headers={"Referer": production_server.url + "/admin/login/"},
    )  # fmt: skip
    assert response.status_code == 302 and response.headers["Location"] == "/admin/"
