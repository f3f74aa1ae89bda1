"""The rater JSON API: sessions, assignment, and votes that are never duplicated or misplaced."""

import uuid

import pytest

from rating.api import CompletionOut, SessionOut, TrialOut, VoteOut
from rating.models import RaterSession, Trial, Vote
from studies.models import Study, Triplet

pytestmark = pytest.mark.django_db


@pytest.fixture
def ready_study(ready_study):
    """Regular trials only here; practice, sentinels and repeats have their own tests."""
    Study.objects.filter(pk=ready_study.pk).update(practice_trials=0)
    ready_study.refresh_from_db()
    return ready_study


def start(client, study, participant=None):
    return client.post(
        f"/api/studies/{study.slug}/sessions",
        {"participant_id": participant, "consent": True},
        content_type="application/json",
    )


def vote(client, token, trial, side="left", client_id=None):
    body = {"index": trial["index"], "triplet": trial["triplet"], "side": side,
            "client_id": str(client_id or uuid.uuid4()), "rt_ms": 812.5}  # fmt: skip
    return client.post(f"/api/sessions/{token}/votes", body, content_type="application/json")


def test_a_session_gets_distinct_triplets_with_image_urls(client, ready_study):
    response = start(client, ready_study, "p-1")
    assert response.status_code == 201
    body = response.json()
    assert body["total"] == len(body["trials"]) == 10
    assert [t["index"] for t in body["trials"]] == list(range(10))
    assert len({t["triplet"] for t in body["trials"]}) == 10
    trial = body["trials"][0]
    for key in ("reference", "left", "right"):
        assert client.get(trial[key]).status_code == 200
    triplet = Triplet.objects.get(pk=trial["triplet"])
    shown = {trial["left"], trial["right"]}
    assert shown == {triplet.p0.image.url, triplet.p1.image.url}
    assert trial["reference"] == triplet.patch.image.url


def test_session_and_vote_answers_have_the_documented_shape(client, ready_study):
    started = start(client, ready_study, "p-1").json()
    assert SessionOut.model_validate(started).model_dump(mode="json") == started
    fetched = client.get(f"/api/sessions/{started['session']}").json()
    assert fetched == started  # listed as laid out at the start, as read back later
    assert set(started) == set(SessionOut.model_fields)
    assert set(started["trials"][0]) == set(TrialOut.model_fields)
    reply = vote(client, started["session"], started["trials"][0])
    assert VoteOut.model_validate(reply.json()).model_dump() == reply.json()
    for trial in started["trials"][1:]:
        vote(client, started["session"], trial)
    done = client.post(f"/api/sessions/{started['session']}/finish").json()
    assert CompletionOut.model_validate(done).model_dump(mode="json") == done
    refused = vote(client, started["session"], {"index": 0, "triplet": "x"})
    assert refused.status_code == 422
    assert set(refused.json()) == {"detail", "reason"} and "triplet" in refused.json()["detail"]


def test_the_same_participant_resumes_the_same_session(client, ready_study):
    first = start(client, ready_study, "p-1").json()
    vote(client, first["session"], first["trials"][0])
    again = start(client, ready_study, "p-1").json()
    assert again["session"] == first["session"]
    assert again["answered"] == 1 and again["trials"][0]["answered"]
    assert RaterSession.objects.count() == 1


def test_a_vote_is_stored_with_which_stimulus_was_chosen(client, ready_study):
    session = start(client, ready_study).json()
    trial = session["trials"][0]
    response = vote(client, session["session"], trial, side="right")
    assert response.status_code == 201
    assert response.json() == {"recorded": True, "replay": False}
    stored = Vote.objects.get()
    chosen_url = trial["right"]
    assert stored.side == "right"
    assert stored.chose_p1 == (chosen_url == stored.trial.triplet.p1.image.url)
    assert stored.rt_ms == 812.5


def test_a_replayed_vote_is_answered_without_a_second_row(client, ready_study):
    session = start(client, ready_study).json()
    client_id = uuid.uuid4()
    first = vote(client, session["session"], session["trials"][0], client_id=client_id)
    again = vote(client, session["session"], session["trials"][0], client_id=client_id)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["replay"] is True
    assert Vote.objects.count() == 1


def test_a_second_vote_on_an_answered_trial_is_refused(client, ready_study):
    session = start(client, ready_study).json()
    vote(client, session["session"], session["trials"][0], side="left")
    response = vote(client, session["session"], session["trials"][0], side="right")
    assert response.status_code == 409
    assert "already been answered" in response.json()["detail"]
    assert Vote.objects.get().side == "left"


def test_a_reused_client_id_on_another_trial_is_refused(client, ready_study):
    session = start(client, ready_study).json()
    client_id = uuid.uuid4()
    vote(client, session["session"], session["trials"][0], client_id=client_id)
    response = vote(client, session["session"], session["trials"][1], client_id=client_id)
    assert response.status_code == 409
    assert Vote.objects.count() == 1


def test_a_vote_for_a_triplet_not_assigned_to_the_rater_is_refused(client, ready_study):
    session = start(client, ready_study).json()
    assigned = {t["triplet"] for t in session["trials"]}
    other = Triplet.objects.exclude(pk__in=assigned).first()
    forged = {**session["trials"][0], "triplet": other.pk}
    response = vote(client, session["session"], forged)
    assert response.status_code == 403
    assert "not assigned" in response.json()["detail"]
    out_of_range = {**session["trials"][0], "index": 99}
    assert vote(client, session["session"], out_of_range).status_code == 403
    assert not Vote.objects.exists()


def test_a_vote_with_a_bad_side_or_unknown_session_is_refused(client, ready_study):
    session = start(client, ready_study).json()
    assert vote(client, session["session"], session["trials"][0], side="up").status_code == 422
    assert vote(client, uuid.uuid4(), session["trials"][0]).status_code == 404
    assert not Vote.objects.exists()


def test_finishing_needs_every_vote_and_then_refuses_late_votes(client, ready_study):
    session = start(client, ready_study).json()
    token = session["session"]
    for trial in session["trials"][:-1]:
        vote(client, token, trial)
    early = client.post(f"/api/sessions/{token}/finish")
    assert early.status_code == 409 and "1 trial(s)" in early.json()["detail"]
    last = session["trials"][-1]
    vote(client, token, last)
    done = client.post(f"/api/sessions/{token}/finish")
    assert done.json() == {
        "completion_code": ready_study.completion_code,
        "screened_out": False,
        "redirect_url": None,
        "mturk": None,
    }
    late = vote(client, token, last)  # a new client id: not a replay
    assert late.status_code == 409 and "ended" in late.json()["detail"]
    assert Vote.objects.count() == 10


def test_no_triplet_is_handed_out_more_often_than_it_needs_votes(client, ready_study):
    # 18 triplets × 2 votes = 36 trials: three sessions of 10 and one of 6, then the study is full.
    sessions = [start(client, ready_study).json() for _ in range(4)]
    assert [s["total"] for s in sessions] == [10, 10, 10, 6]
    per_triplet = {}
    for s in sessions:
        for t in s["trials"]:
            per_triplet[t["triplet"]] = per_triplet.get(t["triplet"], 0) + 1
    assert set(per_triplet.values()) == {2} and len(per_triplet) == 18
    full = start(client, ready_study)
    assert full.status_code == 410 and full.json()["reason"] == "full"
    assert Trial.objects.count() == 36


def test_a_study_that_is_not_ready_takes_no_raters(client, ready_study):
    Study.objects.filter(pk=ready_study.pk).update(status=Study.Status.DRAFT)
    response = start(client, ready_study)
    assert response.status_code == 409
    assert not RaterSession.objects.exists()


def test_the_openapi_schema_describes_the_rater_api(client):
    schema = client.get("/api/openapi.json").json()
    assert {
        "/api/studies/{slug}/sessions",
        "/api/studies/{slug}/sessions/resume",
        "/api/studies/{slug}/sessions/takeover",
        "/api/studies/{slug}/declines",
        "/api/sessions/{token}/votes",
        "/api/sessions/{token}/release",
        "/api/sessions/{token}/finish",
    } <= set(schema["paths"])
    assert "consent" in schema["components"]["schemas"]["SessionIn"]["properties"]
    assert "min_display_ms" in schema["components"]["schemas"]["DisplayOut"]["properties"]


def post(client, path, body=None):
    return client.post(f"/api/{path}", body or {}, content_type="application/json")


def test_nothing_is_claimed_or_stored_before_consent(client, ready_study):
    """Before consent the page may only ask whether the rater has a session already."""
    arrival = {"participant_id": "p-new", "tab_id": "tab-1"}
    asked = post(client, f"studies/{ready_study.slug}/sessions/resume", arrival)
    assert asked.status_code == 204 and asked.content == b""
    refused = post(client, f"studies/{ready_study.slug}/sessions", arrival)
    assert refused.status_code == 403 and refused.json()["reason"] == "no-consent"
    assert not RaterSession.objects.exists() and not Trial.objects.exists()
    assert sum(Triplet.objects.values_list("assigned", flat=True)) == 0

    started = post(client, f"studies/{ready_study.slug}/sessions", {**arrival, "consent": True})
    assert started.status_code == 201
    # Later (a reload, a return) the same participant is found again, consent or not.
    again = post(client, f"studies/{ready_study.slug}/sessions/resume", arrival)
    assert again.status_code == 200 and again.json()["session"] == started.json()["session"]
    assert post(client, f"studies/{ready_study.slug}/sessions", arrival).status_code == 201
    assert RaterSession.objects.count() == 1


def test_declining_only_counts(client, ready_study):
    for _ in range(2):
        assert post(client, f"studies/{ready_study.slug}/declines").status_code == 204
    ready_study.refresh_from_db()
    assert ready_study.declined_count == 2
    assert not RaterSession.objects.exists()
    assert post(client, "studies/no-such-study/declines").status_code == 404


def test_a_full_or_closed_study_says_so_before_consent(client, ready_study):
    Study.objects.filter(pk=ready_study.pk).update(status=Study.Status.COMPLETE)
    full = post(client, f"studies/{ready_study.slug}/sessions/resume", {"participant_id": "x"})
    assert full.status_code == 410 and full.json()["reason"] == "full"
    Study.objects.filter(pk=ready_study.pk).update(status=Study.Status.DRAFT)
    closed = post(client, f"studies/{ready_study.slug}/sessions/resume", {"participant_id": "x"})
    assert closed.status_code == 409 and closed.json()["reason"] == "not-open"


def test_an_empty_tab_id_is_just_another_tab(client, ready_study):
    """Issue #12: a start or a vote with a known participant id and no tab id got past the
    other-tab guard (and the start answered with the victim's session token)."""
    victim = post(
        client,
        f"studies/{ready_study.slug}/sessions",
        {"participant_id": "victim", "tab_id": "tab-V", "consent": True},
    ).json()
    token = victim["session"]
    for tab in ("", None):
        body = {"participant_id": "victim", "consent": True}
        if tab is not None:
            body["tab_id"] = tab
        for path in ("sessions", "sessions/resume"):
            refused = post(client, f"studies/{ready_study.slug}/{path}", body)
            assert refused.status_code == 409 and refused.json()["reason"] == "other-tab"
            assert token not in refused.content.decode()
    trial = victim["trials"][0]
    for tab in ("", "tab-X"):
        body = {"index": trial["index"], "triplet": trial["triplet"], "side": "left",
                "client_id": str(uuid.uuid4()), "rt_ms": 800, "tab_id": tab}  # fmt: skip
        refused = post(client, f"sessions/{token}/votes", body)
        assert refused.status_code == 409 and refused.json()["reason"] == "other-tab"
    assert not Vote.objects.exists()
    # A takeover needs a tab that can hold the session.
    empty = post(
        client, f"studies/{ready_study.slug}/sessions/takeover", {"participant_id": "victim"}
    )
    assert empty.status_code == 422 and empty.json()["reason"] == "invalid"


def test_a_closed_tab_releases_and_continue_here_takes_over(client, ready_study):
    slug = ready_study.slug
    first = post(client, f"studies/{slug}/sessions", {"participant_id": "p", "tab_id": "A",
                                                      "consent": True}).json()  # fmt: skip
    token = first["session"]
    second = {"participant_id": "p", "tab_id": "B"}
    assert post(client, f"studies/{slug}/sessions/resume", second).status_code == 409
    # "Continue here" in B: B holds the session, A's votes are refused from now on.
    taken = post(client, f"studies/{slug}/sessions/takeover", second)
    assert taken.status_code == 200 and taken.json()["session"] == token
    trial = first["trials"][0]
    body = {"index": trial["index"], "triplet": trial["triplet"], "side": "left",
            "client_id": str(uuid.uuid4()), "rt_ms": 800}  # fmt: skip
    assert post(client, f"sessions/{token}/votes", {**body, "tab_id": "A"}).status_code == 409
    assert post(client, f"sessions/{token}/votes", {**body, "tab_id": "B"}).status_code == 201
    # A's release changes nothing (it no longer holds the session); B's frees it at once.
    assert post(client, f"sessions/{token}/release", {"tab_id": "A"}).status_code == 204
    assert RaterSession.objects.get().active_tab == "B"
    assert post(client, f"sessions/{token}/release", {"tab_id": "B"}).status_code == 204
    assert RaterSession.objects.get().active_tab == ""
    # A late vote from the closed tab is taken and does not lock the session again.
    late = {**body, "index": first["trials"][1]["index"], "triplet": first["trials"][1]["triplet"],
            "client_id": str(uuid.uuid4()), "tab_id": "B"}  # fmt: skip
    assert post(client, f"sessions/{token}/votes", late).status_code == 201
    assert RaterSession.objects.get().active_tab == ""
    reopened = post(client, f"studies/{slug}/sessions/resume", {"participant_id": "p",
                                                                 "tab_id": "C"})  # fmt: skip
    assert reopened.status_code == 200 and reopened.json()["answered"] == 2
    assert post(client, f"sessions/{uuid.uuid4()}/release", {"tab_id": "C"}).status_code == 404
    nobody = post(
        client, f"studies/{slug}/sessions/takeover", {"participant_id": "q", "tab_id": "Q"}
    )
    assert nobody.status_code == 404 and nobody.json()["reason"] == "no-session"
