"""Settings for twoafc, read from environment variables only.

The embedded default needs no server: SQLite and media under ``TWOAFC_DATA_DIR``
(``var/`` in the checkout) and Celery over kombu's filesystem transport.
With ``DATABASE_URL`` and ``REDIS_URL`` the same code runs on PostgreSQL and
Redis; with ``AWS_STORAGE_BUCKET_NAME`` media goes to S3 through django-storages.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import envbool, envfloat, envint, envlist, envstr

BASE_DIR = Path(__file__).resolve().parents[2]
DATA_DIR = Path(envstr("TWOAFC_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)  # SQLite cannot create its folder

DEBUG = envbool("DEBUG", False)
SECRET_KEY = envstr("SECRET_KEY", "twoafc-insecure-development-key-change-me-in-production")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
# Pseudonymous rater ids in exports are HMACs under this key, so they cannot be
# reversed to crowd ids by whoever downloads a dataset.
PSEUDONYM_KEY = envstr("TWOAFC_PSEUDONYM_KEY", SECRET_KEY)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # django-ninja as an app: /api/docs then loads Swagger UI from its bundled static files
    # instead of a CDN, so the docs work offline.
    "ninja",
    "jobs",  # the job life cycle the other apps build on; it imports none of them
    "twoafc",  # project-wide commands: demo
    "studies",
    "rating",
    "quality",
    "datasets",
    "analytics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "twoafc.urls"
WSGI_APPLICATION = "twoafc.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_database_url = envstr("DATABASE_URL")
if _database_url:
    DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=60)}
    if DATABASES["default"]["ENGINE"].endswith("postgresql"):
        _pg_options = DATABASES["default"].setdefault("OPTIONS", {})
        if envbool("TWOAFC_DB_PREPARED", True):
            # Statements the server parses and plans once per connection (psycopg prepares
            # a query from its 5th run): a vote then costs PostgreSQL a third less. Set
            # TWOAFC_DB_PREPARED=0 behind a pooler that cannot keep prepared statements
            # (PgBouncer in transaction mode before 1.21).
            _pg_options.update(server_side_binding=True, prepare_threshold=5)
        _random_page_cost = envfloat("TWOAFC_DB_RANDOM_PAGE_COST", 1.1)
        if _random_page_cost is not None:
            # The rater path reads a few rows by key from tables that stay in memory. At
            # PostgreSQL's default (4, for spinning disks) the planner reads a session's
            # trials with hash joins that scan the whole vote and triplet tables until
            # they hold hundreds of thousands of rows: several times slower per start.
            _pg_options["options"] = f"-c random_page_cost={_random_page_cost}"
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "db.sqlite3",
            # The web process and the worker write to the same file: WAL lets
            # readers run beside a writer, IMMEDIATE avoids lock upgrades that
            # fail under contention, and the timeout waits instead of erroring.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
            # A file, not memory: a worker process in the integration tests opens it too.
            # One per test process, so two test runs never share it.
            "TEST": {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
MEDIA_URL = "/media/"
MEDIA_ROOT = DATA_DIR / "media"

_s3_bucket = envstr("AWS_STORAGE_BUCKET_NAME")
STORAGES = {
    "default": (
        {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": _s3_bucket,
                "endpoint_url": envstr("AWS_S3_ENDPOINT_URL") or None,
                "region_name": envstr("AWS_S3_REGION_NAME") or None,
                "querystring_auth": envbool("AWS_QUERYSTRING_AUTH", True),
            },
        }
        if _s3_bucket
        else {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    ),
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Without collectstatic (demo, tests) WhiteNoise serves straight from static/.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns when it is missing
# Serve media from Django itself on the embedded default (demo, tests); a real
# deployment puts S3 or a web server in front instead.
SERVE_MEDIA = envbool("TWOAFC_SERVE_MEDIA", not _s3_bucket)

# Uploads: the pixel limit is checked from the header, before pixels are decoded.
MAX_UPLOAD_PIXELS = envint("TWOAFC_MAX_UPLOAD_PIXELS", 40_000_000)
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("TWOAFC_MAX_UPLOAD_BYTES", 64 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024

_redis_url = envstr("REDIS_URL")

# --- Cache ------------------------------------------------------------------
# Shared by every web and worker process, so a report computed once (analytics) is served
# from the cache by all of them: Redis when configured, else files under the data folder.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _redis_url}
    if _redis_url
    else {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(DATA_DIR / "cache"),
    }
}

# --- Celery -----------------------------------------------------------------
BROKER_DIR = Path(envstr("TWOAFC_BROKER_DIR", str(DATA_DIR / "broker")))
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL") or _redis_url or "filesystem://localhost//"
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        "polling_interval": 0.2,  # the default second per poll dominates small generations
    }
# Job state lives in database rows; Celery keeps no results.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
# A worker killed mid-task must not lose the task: acknowledge after running,
# and requeue when the worker process is lost.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_ROUTES = {
    "studies.tasks.encode_batch": {"queue": "gpu"},
    "studies.tasks.*": {"queue": "cpu"},
    "analytics.tasks.*": {"queue": "cpu"},
    "datasets.tasks.*": {"queue": "cpu"},
    "jobs.tasks.*": {"queue": "cpu"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
if CELERY_BROKER_URL.startswith("redis"):
    # An unacknowledged task of a worker that died is delivered again after this
    # long. Tasks are idempotent, so a redelivery while one still runs is harmless.
    # Workers scan for such tasks every restore interval (kombu's default: every 100 s).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": envint("TWOAFC_VISIBILITY_TIMEOUT", 600),
        "unacked_restore_interval": envint("TWOAFC_UNACKED_RESTORE_INTERVAL", 10),
        "unacked_restore_throttle": 1,
    }
# Publishing a task when the broker is down: give up after about a second (the job row stays
# queued and the sweeper sends it later) rather than holding the web request.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
}  # fmt: skip
CELERY_BROKER_CONNECTION_TIMEOUT = 4

# --- Jobs (generation, fits, snapshots): see jobs/models.py ----------------------------
# A running job whose heartbeat is older than this is orphaned (its worker died) and may be
# claimed again; a queued job not taken for this long is sent again by the sweeper.
TWOAFC_JOB_STALE_S = envint("TWOAFC_JOB_STALE_S", 120)
# How often a running job's heartbeat thread beats: well inside the stale time.
TWOAFC_JOB_HEARTBEAT_S = envint("TWOAFC_JOB_HEARTBEAT_S", 30)
if not 0 < TWOAFC_JOB_HEARTBEAT_S < TWOAFC_JOB_STALE_S:
    raise ImproperlyConfigured(
        "TWOAFC_JOB_HEARTBEAT_S must be above 0 and below TWOAFC_JOB_STALE_S"
    )
# Attempts (claims) before a job is failed: transient errors and dead workers both count.
TWOAFC_JOB_MAX_ATTEMPTS = envint("TWOAFC_JOB_MAX_ATTEMPTS", 3)
# Seconds before the first retry after a transient error; doubled for each further one.
TWOAFC_JOB_RETRY_S = envint("TWOAFC_JOB_RETRY_S", 10)
# celery beat (``celery -A twoafc beat``, or ``worker -B``) runs the sweeper this often.
CELERY_BEAT_SCHEDULE = {
    "sweep-jobs": {
        "task": "jobs.tasks.sweep",
        "schedule": timedelta(seconds=envint("TWOAFC_JOB_SWEEP_S", 60)),
    }
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# Learned codecs and GPU JPEG on a worker without CUDA: run on its CPU, or refuse.
TWOAFC_GPU_FALLBACK_CPU = envbool("TWOAFC_GPU_FALLBACK_CPU", True)

# --- Rating -------------------------------------------------------------------
# Seconds between sweeps for expired trial leases (per study and web process).
TWOAFC_LEASE_SWEEP_S = envint("TWOAFC_LEASE_SWEEP_S", 20)
# Trials whose images the rater page loads ahead of the one on screen.
TWOAFC_PRELOAD_TRIALS = envint("TWOAFC_PRELOAD_TRIALS", 5)
# Where an MTurk ExternalQuestion may send its completion form (turkSubmitTo).
TWOAFC_MTURK_SUBMIT_ORIGINS = envlist(
    "TWOAFC_MTURK_SUBMIT_ORIGINS", "https://www.mturk.com,https://workersandbox.mturk.com"
)
PROLIFIC_COMPLETE_URL = envstr(
    "TWOAFC_PROLIFIC_COMPLETE_URL", "https://app.prolific.com/submissions/complete?cc={code}"
)

# LOG_LEVEL sets every logger; unset, other libraries log warnings and up while the app's own
# loggers (``twoafc.*``: one line per job state change in ``twoafc.jobs``) log INFO, so a
# worker's output says what each job did. Celery replaces the root handler in its workers;
# ``twoafc`` lines reach whichever handler the root has.
_log_level = envstr("LOG_LEVEL")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d: %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": _log_level or "WARNING"},
    "loggers": {
        "twoafc": {"level": _log_level or "INFO"},
        # Refused votes and full studies are answered with a 4xx and a message; not worth a line.
        "django.request": {"level": "ERROR"},
    },
}
