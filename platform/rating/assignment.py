"""The assignment engine: which triplets a session rates, and in what order.

Each triplet gets at most ``votes_per_triplet`` regular trials, each in a
different session, under a row lock (``SELECT … FOR UPDATE SKIP LOCKED`` on
PostgreSQL; SQLite serialises writers). A session's unanswered trials are
leased: when it has been idle for ``lease_minutes`` they go back to the pool,
and come back to the session (or are replaced) if it returns. Around the
regular trials a session gets practice trials first, sentinels (one side is
the reference itself, the other the most distorted stimuli the session rates;
enough of them for the screen-out rule, see ``Study.sentinels_per_session``) and
repeats (an earlier trial with the sides swapped); none of them counts towards a
triplet's votes.
"""

import itertools
import random
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from studies.models import SHUFFLE_KEYS, ReferencePatch, Study, Triplet

from .models import RaterSession, Trial

# Rounds of candidates to try when concurrent raters lock the ones picked first.
CLAIM_ROUNDS = 5


@dataclass(frozen=True, slots=True)
class Claimed:
    """A triplet counted out to a session, and the side its p1 is shown on."""

    pk: int
    patch_id: int
    p1_on_left: bool


@dataclass(eq=False, slots=True)
class PlannedTrial:
    """A trial of a session being laid out: plain values, cheaper than model instances."""

    kind: str
    triplet_id: int
    p1_on_left: bool
    sentinel_side: str = ""


def claim_triplets(study: Study, count: int, exclude) -> list[Claimed]:
    """Lock open triplets, spread over sources and patches, and count them out.

    Candidates are read without locks (least-assigned first, from a random point
    of the shuffle order), then only the ones picked are locked, skipping rows
    another rater holds and re-checking that each still has room; rows lost to a
    race are replaced by the next candidates. Locking no more than it takes keeps
    concurrent raters from starving each other.
    """
    needed = study.votes_per_triplet
    chosen: list[Claimed] = []
    tried = set(exclude)
    for _ in range(CLAIM_ROUNDS):
        want = count - len(chosen)
        candidates = _open_candidates(study.pk, needed, tried, max(want * 4, 40))
        if not candidates:
            break
        picked = _spread(candidates, want, avoid_patches={t.patch_id for t in chosen})
        tried.update(picked)
        chosen += _count_out(picked, needed)
        if len(chosen) >= count:
            break
    return chosen


def _open_candidates(
    study_id: int, needed: int, tried: set[int], limit: int
) -> list[tuple[int, int, int]]:
    """Up to ``limit`` open triplets as (id, patch, source image), least-assigned first.

    Within the lowest ``assigned`` level the rows are read from a random point of
    the shuffle order, wrapping round, then from the next levels: each read is a
    range of the (study, assigned, shuffle) index, however large the study.
    """
    table = connection.ops.quote_name(Triplet._meta.db_table)
    patches = connection.ops.quote_name(ReferencePatch._meta.db_table)
    not_tried = f"AND t.id NOT IN ({', '.join(['%s'] * len(tried))})" if tried else ""
    open_rows = f"t.study_id = %s AND t.assigned < %s {not_tried}"
    open_params = [study_id, needed, *tried]
    lowest = f"(SELECT MIN(t.assigned) FROM {table} t WHERE {open_rows})"
    pivot = random.randrange(SHUFFLE_KEYS)
    rows: list[tuple[int, int, int]] = []
    with connection.cursor() as cursor:
        for where, params in (
            (f"t.assigned = {lowest} AND t.shuffle >= %s ORDER BY t.shuffle", [pivot]),
            (f"t.assigned = {lowest} AND t.shuffle < %s ORDER BY t.shuffle", [pivot]),
            (f"t.assigned > {lowest} ORDER BY t.assigned, t.shuffle", []),
        ):
            cursor.execute(
                f"SELECT t.id, t.patch_id, p.source_id FROM {table} t "
                f"JOIN {patches} p ON p.id = t.patch_id WHERE {open_rows} AND {where} LIMIT %s",
                [*open_params, *open_params, *params, limit - len(rows)],
            )
            rows += cursor.fetchall()
            if len(rows) >= limit:
                break
    return rows


def has_open_triplets(study: Study) -> bool:
    """Whether any triplet of the study still has trials to hand out (one index probe)."""
    table = connection.ops.quote_name(Triplet._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {table} WHERE study_id = %s AND assigned < %s LIMIT 1",
            [study.pk, study.votes_per_triplet],
        )
        return cursor.fetchone() is not None


def _count_out(picked: list[int], needed: int) -> list[Claimed]:
    """Add one to ``assigned`` of the picked triplets that still have room, in one statement.

    On PostgreSQL the rows are locked with NO KEY UPDATE, skipping rows another rater
    holds: new trials' foreign-key checks (KEY SHARE) on these rows, from other raters'
    sessions, must not wait on us, or starts deadlock. SQLite serialises writers.
    """
    if not picked:
        return []
    table = connection.ops.quote_name(Triplet._meta.db_table)
    marks = ", ".join(["%s"] * len(picked))
    rows = f"SELECT id FROM {table} WHERE id IN ({marks}) AND assigned < %s"
    if connection.features.has_select_for_update_skip_locked:
        rows += " FOR NO KEY UPDATE SKIP LOCKED"
    sql = (
        f"UPDATE {table} SET assigned = assigned + 1 WHERE id IN ({rows}) "
        "RETURNING id, patch_id, assigned"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*picked, needed])
        taken = cursor.fetchall()
    # Which side p1 goes on alternates over the raters of a triplet: balanced left/right.
    return [
        Claimed(pk, patch_id, p1_on_left=(assigned - 1 + pk) % 2 == 1)
        for pk, patch_id, assigned in taken
    ]


def _spread(
    candidates: list[tuple[int, int, int]], count: int, avoid_patches: set[int]
) -> list[int]:
    """Round-robin over source images, one triplet per reference patch before any patch repeats."""
    by_source: dict[int, list[int]] = {}
    seen = set(avoid_patches)
    rest = []
    for pk, patch_id, source_id in candidates:
        if patch_id in seen:
            rest.append(pk)
        else:
            seen.add(patch_id)
            by_source.setdefault(source_id, []).append(pk)
    picked: list[int] = []
    queues = [queue for queue in by_source.values() if queue]
    while queues and len(picked) < count:
        for queue in list(queues):
            picked.append(queue.pop(0))
            if not queue:
                queues.remove(queue)
    return (picked + rest)[:count]


def lay_out_trials(session: RaterSession, regular: list[Claimed]) -> list[PlannedTrial]:
    """Practice first, then the regular trials with sentinels and repeats mixed in.

    Inserts them and returns them in index order."""
    study = session.study
    rng = random.Random(session.token.int)
    rng.shuffle(regular)
    practice = _practice_triplets(study, exclude={t.pk for t in regular}, rng=rng)
    trials = [PlannedTrial(Trial.Kind.PRACTICE, pk, rng.random() < 0.5) for pk in practice]
    main = [PlannedTrial(Trial.Kind.REGULAR, t.pk, t.p1_on_left) for t in regular]
    for triplet_id in _sentinel_triplets(study, regular):
        position = rng.randrange(len(main) + 1)
        side = rng.choice(["left", "right"])
        main.insert(position, PlannedTrial(Trial.Kind.SENTINEL, triplet_id, False, side))
    repeats = rng.sample(
        range(len(regular)), min(len(regular), round(len(regular) * study.repeat_rate))
    )
    originals = [t for t in main if t.kind == Trial.Kind.REGULAR]
    for number in repeats:
        original = originals[number]
        after = main.index(original) + 1
        main.insert(rng.randrange(after, len(main) + 1), PlannedTrial(
            Trial.Kind.REPEAT, original.triplet_id, not original.p1_on_left
        ))  # fmt: skip
    trials += main
    _insert_trials(session.pk, trials)
    return trials


def _sentinel_triplets(study: Study, regular: list[Claimed]) -> list[int]:
    """The triplets the session's sentinels show (``Study.sentinels_per_session`` of them).

    A sentinel shows the reference beside its triplet's lower-rate stimulus (``Trial.shown``).
    The screen-out rule assumes a careful rater picks the reference nearly always, which a
    near-lossless stimulus would not allow. So sentinels take the session's triplets whose
    lower-rate stimulus has the fewest bits per pixel, the most distorted first, each once
    before any comes again (a session may have more sentinels than regular trials).
    """
    count = study.sentinels_per_session(len(regular))
    if not count:
        return []
    shown = triplets_shown(study, [t.pk for t in regular])
    # shown: (reference, p0 image, p0 bpp, p1 image, p1 bpp)
    ranked = sorted(regular, key=lambda t: (min(shown[t.pk][2], shown[t.pk][4]), t.pk))
    return [ranked[number % len(ranked)].pk for number in range(count)]


def _insert_trials(session_id: int, trials: list[PlannedTrial]) -> None:
    """The trials at indexes 0, 1, … with one INSERT sent for all rows (psycopg pipelines
    ``executemany`` into one round trip): a fraction of the Python time of ``bulk_create``,
    and nothing is read back (trials are found by session and index)."""
    quote = connection.ops.quote_name
    columns = ("session_id", "index", "kind", "triplet_id", "p1_on_left", "sentinel_side",
               "released")  # fmt: skip
    sql = (
        f"INSERT INTO {quote(Trial._meta.db_table)} ({', '.join(map(quote, columns))}) "
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    rows = [(session_id, index, t.kind, t.triplet_id, t.p1_on_left, t.sentinel_side, False)
            for index, t in enumerate(trials)]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _practice_triplets(study: Study, exclude: set[int], rng: random.Random) -> list[int]:
    """A few triplets to practise on, preferably ones this session does not rate for real."""
    if not study.practice_trials:
        return []
    ids = _practice_pool(study)
    pool = [pk for pk in ids if pk not in exclude] or ids
    return rng.sample(pool, min(study.practice_trials, len(pool)))


PRACTICE_POOL_SIZE = 2000


def _practice_pool(study: Study) -> list[int]:
    """The triplets practice trials are drawn from: the study's first, as read once."""
    return list(itertools.islice(triplets_shown(study), PRACTICE_POOL_SIZE))


# Per study, what each triplet shows. A ready study's triplets do not change, so each
# process reads them once (the first SHOWN_FIRST_READ in one query, any others as sessions
# meet them) rather than joining four tables on every session start. Keyed by creation
# time too: a test database may hand a new study an old study's pk.
_shown: dict[tuple[int, object], dict[int, tuple]] = {}
SHOWN_FIRST_READ = 20_000
SHOWN_KEPT = 200_000
SHOWN_FIELDS = ("pk", "patch__image", "p0__image", "p0__bpp", "p1__image", "p1__bpp")


def triplets_shown(study: Study, triplet_ids=()) -> dict[int, tuple]:
    """(reference, p0 image, p0 bpp, p1 image, p1 bpp) by triplet id, ``triplet_ids`` included."""
    key = (study.pk, study.created_at)
    if sum(map(len, _shown.values())) > SHOWN_KEPT:
        _shown.clear()
    known = _shown.get(key)
    if known is None:
        rows = study.triplets.order_by("pk").values_list(*SHOWN_FIELDS)[:SHOWN_FIRST_READ]
        known = _shown[key] = {pk: tuple(shown) for pk, *shown in rows}
    missing = {pk for pk in triplet_ids if pk not in known}
    if missing:
        for pk, *shown in Triplet.objects.filter(pk__in=missing).values_list(*SHOWN_FIELDS):
            known[pk] = tuple(shown)
    return known


# When this process last swept each study for expired leases. Leases run for minutes,
# so sweeping on every session start would only repeat the same empty query.
_last_sweep: dict[int, float] = {}


def sweep_expired_trials(study: Study) -> int:
    """``release_expired_trials``, at most every TWOAFC_LEASE_SWEEP_S per study in this process."""
    now = time.monotonic()
    every = settings.TWOAFC_LEASE_SWEEP_S
    if study.pk in _last_sweep and now - _last_sweep[study.pk] < every:
        return 0
    _last_sweep[study.pk] = now
    return release_expired_trials(study)


def release_expired_trials(study: Study) -> int:
    """Return the unanswered regular trials of idle sessions to the pool; returns how many."""
    cutoff = timezone.now() - timedelta(minutes=study.lease_minutes)
    with transaction.atomic():
        expired = Trial.objects.filter(
            session__study=study, session__finished_at__isnull=True, session__last_seen_at__lt=cutoff,
            kind=Trial.Kind.REGULAR, released=False, vote__isnull=True,
        )  # fmt: skip
        if connection.features.has_select_for_update_skip_locked:
            expired = expired.select_for_update(skip_locked=True, no_key=True, of=("self",))
        trials = list(expired.values_list("pk", "triplet_id"))
        if not trials:
            return 0
        Trial.objects.filter(pk__in=[pk for pk, _ in trials]).update(released=True)
        per_triplet: dict[int, int] = {}
        for _, triplet_id in trials:
            per_triplet[triplet_id] = per_triplet.get(triplet_id, 0) + 1
        for triplet_id, count in per_triplet.items():
            Triplet.objects.filter(pk=triplet_id).update(assigned=F("assigned") - count)
        Study.objects.filter(pk=study.pk, status=Study.Status.COMPLETE).update(
            status=Study.Status.READY
        )
    return len(trials)


def renew_released_trials(session: RaterSession) -> None:
    """A returning session takes its released trials back, or gets open triplets instead."""
    study = session.study
    with transaction.atomic():
        released = list(session.trials.filter(released=True, vote__isnull=True))
        if not released:
            return
        held = set(
            session.trials.filter(kind=Trial.Kind.REGULAR).values_list("triplet_id", flat=True)
        )
        for trial in released:
            reclaimed = Triplet.objects.filter(
                pk=trial.triplet_id, assigned__lt=study.votes_per_triplet
            ).update(assigned=F("assigned") + 1)
            if not reclaimed:
                replacement = claim_triplets(study, 1, exclude=held)
                if not replacement:
                    trial.delete()  # nothing left to rate in its place
                    continue
                trial.triplet_id = replacement[0].pk
                held.add(trial.triplet_id)
            trial.released = False
            trial.save(update_fields=["triplet", "released"])
