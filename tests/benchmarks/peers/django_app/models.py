"""The application as a django-fsm-2 model, as its README and django-fsm-log's show.

``state`` is a protected ``FSMField``; each event is a ``@transition`` method whose
``permission`` says who may fire it (checked with ``has_transition_perm`` before the call, as
the README's views do) and whose ``@fsm_log_by`` makes django-fsm-log record the user in its
``StateLog``. ``ConcurrentTransitionMixin`` is the README's answer to concurrent transitions:
``save()`` updates the row only if its state is still the one it was loaded with.

Who a user is in the process (role and unit) is a profile beside Django's user, ``Officer``.
"""

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import models
from django_fsm import ConcurrentTransitionMixin, FSMField, FSMModelMixin, transition
from django_fsm_log.decorators import fsm_log_by

from ..process import (
    CLERK_OF_ACCEPTANCE_POINT,
    PRODUCER_OF_ACCEPTANCE_PROVINCE,
    REVIEWER_OF_HUKOU_COUNTY,
    Rule,
    now,
    review_due,
)


class Officer(models.Model):
    """The role and unit of a user."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="officer"
    )
    role = models.CharField(max_length=32)
    unit = models.CharField(max_length=6)


def allowed(rule: Rule) -> Callable[[Any, Any], bool]:
    """A transition permission: the user's officer profile against the application."""

    def permission(instance: Any, user: Any) -> bool:
        return rule.allows(user.officer, instance)

    return permission


CLERK = allowed(CLERK_OF_ACCEPTANCE_POINT)
REVIEWER = allowed(REVIEWER_OF_HUKOU_COUNTY)
PRODUCER = allowed(PRODUCER_OF_ACCEPTANCE_PROVINCE)


class Application(ConcurrentTransitionMixin, FSMModelMixin, models.Model):
    kind = models.CharField(max_length=20)
    state = FSMField(default="submitted", protected=True, db_index=True)
    citizen_id = models.CharField(max_length=18, db_index=True)
    name = models.CharField(max_length=64)
    hukou_region = models.CharField(max_length=6)
    acceptance_region = models.CharField(max_length=6)
    documents = models.JSONField()
    fee_paid = models.DecimalField(max_digits=8, decimal_places=2)
    fee_waiver = models.CharField(max_length=32, null=True)
    receipt_no = models.CharField(max_length=32, unique=True)
    submitted_at = models.DateTimeField()
    due_at = models.DateTimeField()
    review_due_at = models.DateTimeField(null=True)
    rejection_ground = models.CharField(max_length=32, null=True)
    rejection_note = models.TextField(null=True)
    old_card_returned = models.BooleanField(default=False)

    @fsm_log_by
    @transition(field=state, source="submitted", target="transmitted", permission=CLERK)
    def transmit(self, by: Any = None) -> None:
        self.review_due_at = review_due(now())

    @fsm_log_by
    @transition(field=state, source="transmitted", target="approved", permission=REVIEWER)
    def approve(self, by: Any = None) -> None:
        pass

    @fsm_log_by
    @transition(field=state, source="transmitted", target="rejected", permission=REVIEWER)
    def reject(self, by: Any = None) -> None:
        pass

    @fsm_log_by
    @transition(field=state, source="approved", target="produced", permission=PRODUCER)
    def produce(self, by: Any = None) -> None:
        pass

    @fsm_log_by
    @transition(field=state, source="produced", target="ready", permission=CLERK)
    def mark_ready(self, by: Any = None) -> None:
        pass

    @fsm_log_by
    @transition(field=state, source="ready", target="collected", permission=CLERK)
    def collect(self, by: Any = None) -> None:
        pass
