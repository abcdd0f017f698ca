"""The library beside the frameworks a host would pick instead: the peers phase.

The same workload as the single-command benchmark (`tests.benchmarks.single`): fresh
applications in ``submitted``, then one sweep per event of transmit, approve, produce and
mark_ready, one transaction per transition, the same officers. Six variants, each in a process
of its own (`worker`), in the same rounds (`bench`):

- ``library``: the public API (`ours.Library`);
- ``floor``: the library's own writes through the driver (`ours.Driver`);
- ``django-fsm-2`` with django-fsm-log (`with_django_fsm`);
- ``transitions``, ``python-statemachine`` and ``sqlalchemy-fsm`` on SQLAlchemy ORM models
  (`with_transitions`, `with_statemachine`, `with_sqlalchemy_fsm`).

Each peer is written as its own documentation shows, keeps its own tables in a database of its
own (a SQLite file beside the library's, or a database on the same PostgreSQL server) and
checks, before the rounds, that it refuses a wrong role, a wrong unit and a wrong state without
writing anything. Every round prepares fresh applications for every variant (untimed), then
runs each event's sweep variant after variant, each sweep starting one variant later than the
one before; a variant's round time is the sum of its four sweeps. A round's ratio is the
variant's time divided by the library's (or the floor's) in that same round. Afterwards the
library's database is verified (the library's and the floor's histories), and every peer's
applications must all be ``ready`` with one history row per transition.

Importing this module needs none of the peers' packages: they load in their own processes.
"""
