"""The Django project of the integration tests (``tests/integration/test_django*.py``).

The databases and ``FLUXO`` come from the environment, so the in-process tests and
the ``python -m django ...`` subprocesses share one settings module:

* ``FLUXO_TEST_DJANGO_DATABASES``: ``DATABASES``, as JSON (in process: see conftest.py);
* ``FLUXO_TEST_DJANGO_FLUXO``: ``FLUXO``, as JSON (absent: no ``FLUXO`` setting).
"""

from __future__ import annotations

import json
import os

SECRET_KEY = "fluxo-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "tests.integration.django_site.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "fluxo.contrib.django",
    "tests.integration.django_site.notes",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, for tests

DATABASES = json.loads(os.environ.get("FLUXO_TEST_DJANGO_DATABASES", "{}"))

if "FLUXO_TEST_DJANGO_FLUXO" in os.environ:
    FLUXO = json.loads(os.environ["FLUXO_TEST_DJANGO_FLUXO"])
