"""The generic engine: it runs any machine and knows none.

- `definition`: a python-statemachine class compiled into lookup tables (`Definition`);
- `decision`: the pure decision step, a command checked against a loaded record;
- `runner`: one command as one transaction (`Executor`, `Runner`), idempotent requests;
- `store`: binds, transactions, SQLite's and PostgreSQL's settings, database errors;
- `records`: the queries every machine shares (records, history, requests, outbox);
- `chain`: the history's hash chain; `verification`: `verify()`;
- `migrate`: the shipped Alembic migrations run from code.

Nothing here imports a machine (`workflow.machines`), a machine's table
(`workflow.models.tables`) or the process enums (`workflow.models.enums`); a test keeps it so.
"""
