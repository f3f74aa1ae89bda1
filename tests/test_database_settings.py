"""PostgreSQL connection options read from the environment, and what reaches the server."""

import json
import os
import subprocess
import sys

import pytest
from django.db import connection

from twoafc.processes import ROOT, child_env

PG_URL = "postgres://postgres@127.0.0.1:5432/test"


def options_for(**env: str) -> dict | str:
    """The default database's OPTIONS as twoafc.settings builds them under ``env``."""
    code = (
        "import json; from django.conf import settings; "
        "print(json.dumps(settings.DATABASES['default'].get('OPTIONS', {})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(DATABASE_URL=PG_URL, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode:
        return done.stderr.strip().splitlines()[-1]
    return json.loads(done.stdout)


def test_postgresql_connections_prepare_statements_and_price_random_reads_low():
    assert options_for() == {
        "server_side_binding": True,
        "prepare_threshold": 5,
        "options": "-c random_page_cost=1.1",
    }
    assert options_for(TWOAFC_DB_PREPARED="0", TWOAFC_DB_RANDOM_PAGE_COST="") == {}
    assert options_for(TWOAFC_DB_RANDOM_PAGE_COST="2") == {
        "server_side_binding": True,
        "prepare_threshold": 5,
        "options": "-c random_page_cost=2.0",
    }
    refused = options_for(TWOAFC_DB_RANDOM_PAGE_COST="cheap")
    assert refused.endswith("TWOAFC_DB_RANDOM_PAGE_COST='cheap' is not a number")


@pytest.mark.django_db
@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="needs PostgreSQL"
)
def test_the_server_applies_the_options_to_the_apps_connections():
    with connection.cursor() as cursor:
        cursor.execute("SHOW random_page_cost")
        assert cursor.fetchone()[0] == "1.1"
        for _ in range(6):  # psycopg prepares a statement from its 5th run
            cursor.execute("SELECT %s::int + 1", [41])
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] >= 1
