"""What the tests share: builders, databases, and one subject per registered machine."""

from tests.support.builders import (
    ACCEPTANCE,
    DOCUMENTS,
    HUKOU,
    OTHER_COUNTY,
    PATH_TO,
    Clock,
    actor_for,
    citizen_id,
    clerk,
    drive,
    form,
    good_payload,
    producer,
    reviewer,
)
from tests.support.databases import POSTGRES_URL_VARIABLE, Databases, postgres_url, tampering
from tests.support.subjects import SUBJECTS, Subject

__all__ = [
    "ACCEPTANCE",
    "DOCUMENTS",
    "HUKOU",
    "OTHER_COUNTY",
    "PATH_TO",
    "POSTGRES_URL_VARIABLE",
    "SUBJECTS",
    "Clock",
    "Databases",
    "Subject",
    "actor_for",
    "citizen_id",
    "clerk",
    "drive",
    "form",
    "good_payload",
    "postgres_url",
    "producer",
    "reviewer",
    "tampering",
]
