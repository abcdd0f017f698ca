"""django-fsm-2 with django-fsm-log, in a Django project of its own (the models are in
`tests.benchmarks.peers.django_app`).

The unit of work is what the README's views do, inside ``transaction.atomic()`` as its section
on ``ConcurrentTransitionMixin`` asks: load the application, refuse with `PermissionDenied`
unless ``has_transition_perm`` (which checks the state, the conditions and the permission),
call the transition with ``by=user`` (django-fsm-log writes its ``StateLog`` row on
``post_transition``), then ``save()`` (an UPDATE of every column, ``WHERE id = ? AND state =
<the state it was loaded in>``). On SQLite the connection gets WAL and ``synchronous=FULL``
when Django opens it (the ``connection_created`` signal); PostgreSQL keeps the server's
``synchronous_commit=on``.
"""

from __future__ import annotations

from typing import Any

import django
import sqlalchemy as sa
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.backends.signals import connection_created
from django_fsm import TransitionNotAllowed, has_transition_perm

from .process import Officer, fresh_values
from .variant import Peer


def durable_sqlite(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")


def database(url: str) -> dict[str, Any]:
    """Django's DATABASES entry for a SQLAlchemy URL (SQLite file, or PostgreSQL over a unix
    socket as ``.ci/with-postgres`` gives it)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": parsed.database}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parsed.database,
        "USER": parsed.username or "",
        "PASSWORD": parsed.password or "",
        "HOST": str(parsed.query.get("host", parsed.host or "")),
        "PORT": str(parsed.query.get("port", parsed.port or "")),
    }


class DjangoFsm(Peer):
    packages = ("django-fsm-2", "django-fsm-log", "django")
    refused = (PermissionDenied, TransitionNotAllowed)

    def __init__(self, url: str) -> None:
        super().__init__()
        settings.configure(
            DATABASES={"default": database(url)},
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "django_fsm",
                "django_fsm_log",
                "tests.benchmarks.peers.django_app.apps.ApplicationsConfig",
            ],
            USE_TZ=True,
            TIME_ZONE="UTC",
        )
        connection_created.connect(durable_sqlite)
        django.setup()
        from django.core.management import call_command
        from django_fsm_log.models import StateLog

        from .django_app.models import Application

        call_command("migrate", verbosity=0)
        self.model, self.log = Application, StateLog

    def officer(self, officer: Officer) -> Any:
        from django.contrib.auth.models import User

        from .django_app.models import Officer as Profile

        user, created = User.objects.get_or_create(username=officer.id)
        if created:
            Profile.objects.create(user=user, role=officer.role, unit=officer.unit)
        # As a request's user would be: loaded with its profile once, then used.
        return User.objects.select_related("officer").get(pk=user.pk)

    def fire(self, event: str, app_id: Any, who: Any) -> None:
        with transaction.atomic():
            application = self.model.objects.get(pk=app_id)
            move = getattr(application, event)
            if not has_transition_perm(move, who):
                raise PermissionDenied(f"{who.username} may not {event} application {app_id}")
            move(by=who)
            application.save()

    def create(self, count: int) -> list[Any]:
        made = self.model.objects.bulk_create(
            [
                self.model(**fresh_values(n, salt=3))
                for n in range(self.created, self.created + count)
            ]
        )
        return [a.pk for a in made]

    def state_and_history(self, app_id: Any) -> tuple[str, int]:
        application = self.model.objects.get(pk=app_id)
        return application.state, self.log.objects.for_(application).count()

    def totals(self) -> tuple[dict[str, int], int]:
        from django.db.models import Count

        states = {
            row["state"]: row["n"]
            for row in self.model.objects.values("state").annotate(n=Count("id"))
        }
        return states, self.log.objects.count()

    def close(self) -> None:
        from django.db import connections

        connections.close_all()
