"""DDL that makes the database itself refuse illegal transitions, for SQLite and PostgreSQL.

Used by the revisions; each function emits DDL for the dialect of the migration's connection.
Frozen: a revision that has shipped must keep producing the same DDL, so change nothing here
that a shipped revision calls; add new functions instead.
"""

from __future__ import annotations

from alembic import op

from workflow.migrations.naming import name

PREFIX = "idcard-workflow: "
APPEND_ONLY = PREFIX + "the transition log is append-only"


def _frozen_table() -> str:
    return PREFIX + f"{name('allowed_transitions')} is changed by migrations only"


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def install_functions() -> None:
    """PostgreSQL's trigger functions (SQLite triggers carry their own bodies)."""
    if _sqlite():
        return
    op.execute(
        """
        CREATE OR REPLACE FUNCTION idcard_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION USING ERRCODE = '23000', MESSAGE = TG_ARGV[0];
        END $$
        """
    )
    allowed = name("allowed_transitions")
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION idcard_guard_record() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                IF NEW.state IS DISTINCT FROM TG_ARGV[1] OR NEW.version IS DISTINCT FROM 1 THEN
                    RAISE EXCEPTION USING ERRCODE = '23000', MESSAGE = format(
                        '{PREFIX}a new %s record must start in %s at version 1',
                        TG_ARGV[0], TG_ARGV[1]);
                END IF;
            ELSIF NEW.id IS DISTINCT FROM OLD.id
                OR NEW.version IS DISTINCT FROM OLD.version + 1
                OR NOT EXISTS (
                    SELECT 1 FROM {allowed} a
                    WHERE a.machine = TG_ARGV[0]
                      AND a.from_state = OLD.state AND a.to_state = NEW.state) THEN
                RAISE EXCEPTION USING ERRCODE = '23000', MESSAGE = format(
                    '{PREFIX}a %s record changes only by an allowed transition from %s '
                    'that bumps its version by one (%s -> %s refused)',
                    TG_ARGV[0], OLD.state, OLD.state, NEW.state);
            END IF;
            RETURN NEW;
        END $$
        """
    )


def drop_functions() -> None:
    if _sqlite():
        return
    op.execute("DROP FUNCTION idcard_guard_record()")
    op.execute("DROP FUNCTION idcard_refuse()")


def guard_log() -> None:
    """The transition log: append-only, and each row an allowed transition."""
    log, allowed = name("transition_log"), name("allowed_transitions")
    if _sqlite():
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {log}_no_{action.lower()} BEFORE {action} "
                f"ON {log} BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
            )
        # SQLite enforces the foreign key only where PRAGMA foreign_keys is on: check here too.
        op.execute(
            f"CREATE TRIGGER {log}_allowed BEFORE INSERT ON {log} "
            "WHEN NEW.from_state IS NOT NULL AND NOT EXISTS ("
            f"SELECT 1 FROM {allowed} a WHERE a.machine = NEW.machine "
            "AND a.event = NEW.event AND a.from_state = NEW.from_state "
            "AND a.to_state = NEW.to_state) "
            f"BEGIN SELECT RAISE(ABORT, '{PREFIX}not an allowed transition'); END"
        )
        return
    op.execute(
        f"CREATE TRIGGER {log}_append_only BEFORE UPDATE OR DELETE ON {log} "
        f"FOR EACH ROW EXECUTE FUNCTION idcard_refuse('{APPEND_ONLY}')"
    )
    op.execute(
        f"CREATE TRIGGER {log}_no_truncate BEFORE TRUNCATE ON {log} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION idcard_refuse('{APPEND_ONLY}')"
    )


def unguard_log() -> None:
    log = name("transition_log")
    if _sqlite():
        for trigger in ("no_update", "no_delete", "allowed"):
            op.execute(f"DROP TRIGGER {log}_{trigger}")
        return
    op.execute(f"DROP TRIGGER {log}_no_truncate ON {log}")
    op.execute(f"DROP TRIGGER {log}_append_only ON {log}")


def freeze_allowed_transitions() -> None:
    """Refuse every change to allowed_transitions (a revision unfreezes it to add rows)."""
    allowed, message = name("allowed_transitions"), _frozen_table()
    if _sqlite():
        for action in ("INSERT", "UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {allowed}_no_{action.lower()} BEFORE {action} "
                f"ON {allowed} BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )
        return
    op.execute(
        f"CREATE TRIGGER {allowed}_frozen BEFORE INSERT OR UPDATE OR DELETE "
        f"ON {allowed} FOR EACH ROW EXECUTE FUNCTION idcard_refuse('{message}')"
    )
    op.execute(
        f"CREATE TRIGGER {allowed}_no_truncate BEFORE TRUNCATE ON {allowed} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION idcard_refuse('{message}')"
    )


def unfreeze_allowed_transitions() -> None:
    allowed = name("allowed_transitions")
    if _sqlite():
        for action in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER {allowed}_no_{action}")
        return
    op.execute(f"DROP TRIGGER {allowed}_no_truncate ON {allowed}")
    op.execute(f"DROP TRIGGER {allowed}_frozen ON {allowed}")


def guard_records(table: str, machine: str, initial: str) -> None:
    """A state table (its unprefixed name): records start in ``initial`` at version 1 and
    change only by an allowed transition that bumps the version by one."""
    table, allowed = name(table), name("allowed_transitions")
    if _sqlite():
        op.execute(
            f"CREATE TRIGGER {table}_insert_guard BEFORE INSERT ON {table} "
            f"WHEN NEW.state IS NOT '{initial}' OR NEW.version IS NOT 1 "
            f"BEGIN SELECT RAISE(ABORT, '{PREFIX}a new {machine} record must start in "
            f"{initial} at version 1'); END"
        )
        op.execute(
            f"CREATE TRIGGER {table}_update_guard BEFORE UPDATE ON {table} "
            "WHEN NEW.id IS NOT OLD.id OR NEW.version IS NOT OLD.version + 1 OR NOT EXISTS ("
            f"SELECT 1 FROM {allowed} a WHERE a.machine = '{machine}' "
            "AND a.from_state = OLD.state AND a.to_state = NEW.state) "
            f"BEGIN SELECT RAISE(ABORT, '{PREFIX}a {machine} record changes only by an allowed "
            "transition that bumps its version by one'); END"
        )
        return
    op.execute(
        f"CREATE TRIGGER {table}_guard BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW "
        f"EXECUTE FUNCTION idcard_guard_record('{machine}', '{initial}')"
    )


def unguard_records(table: str) -> None:
    table = name(table)
    if _sqlite():
        op.execute(f"DROP TRIGGER {table}_update_guard")
        op.execute(f"DROP TRIGGER {table}_insert_guard")
        return
    op.execute(f"DROP TRIGGER {table}_guard ON {table}")


def publish_log() -> None:
    """Every history row writes its outbox row, whoever inserts it."""
    log, outbox = name("transition_log"), name("outbox")
    if _sqlite():
        op.execute(
            f"CREATE TRIGGER {log}_publish AFTER INSERT ON {log} BEGIN "
            f"INSERT INTO {outbox} (machine, record_id, seq, event, state, at, acked_at) "
            "VALUES (NEW.machine, NEW.record_id, NEW.seq, NEW.event, NEW.to_state, NEW.at, NULL); "
            "END"
        )
        return
    install_publish_function()
    op.execute(
        f"CREATE TRIGGER {log}_publish AFTER INSERT ON {log} "
        "FOR EACH ROW EXECUTE FUNCTION idcard_publish()"
    )


def install_publish_function() -> None:
    """PostgreSQL's function behind the publishing trigger."""
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION idcard_publish() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {name("outbox")} (machine, record_id, seq, event, state, at, acked_at)
            VALUES (NEW.machine, NEW.record_id, NEW.seq, NEW.event, NEW.to_state, NEW.at, NULL);
            RETURN NULL;
        END $$
        """
    )


def install_publish_function_for(machines: tuple[str, ...], message: str) -> None:
    """PostgreSQL's publishing function, refusing a row of a machine not in ``machines``.

    The check lives in the function the publishing trigger already runs for every row, so it
    costs no trigger of its own; like every library function it runs with a fixed search path.
    """
    known = ", ".join(f"'{m}'" for m in machines)
    schema = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar()
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION idcard_publish() RETURNS trigger LANGUAGE plpgsql
        SET search_path = "{schema}", pg_temp AS $$
        BEGIN
            IF NEW.machine NOT IN ({known}) THEN
                RAISE EXCEPTION USING ERRCODE = '23000', MESSAGE = '{message}';
            END IF;
            INSERT INTO {name("outbox")} (machine, record_id, seq, event, state, at, acked_at)
            VALUES (NEW.machine, NEW.record_id, NEW.seq, NEW.event, NEW.to_state, NEW.at, NULL);
            RETURN NULL;
        END $$
        """
    )


def unpublish_log() -> None:
    log = name("transition_log")
    if _sqlite():
        op.execute(f"DROP TRIGGER {log}_publish")
        return
    op.execute(f"DROP TRIGGER {log}_publish ON {log}")
    op.execute("DROP FUNCTION idcard_publish()")


# -- statement-level checks (revision 0011) --------------------------------------------------
# PostgreSQL runs a row-level trigger's function once per row; a statement-level one with a
# transition table once per statement, over every row the statement changed. Same refusals,
# same messages: a statement that breaks a rule is refused whole, whatever wrote it.

ADDED_ROWS = "idcard_added_rows"
MOVED_FROM = "idcard_moved_from"
MOVED_TO = "idcard_moved_to"
"""The transition tables' names; a trigger function's transition tables are looked up before
any table, a temporary one included."""


def _schema() -> str:
    return str(op.get_bind().exec_driver_sql("SELECT current_schema()").scalar())


def install_statement_functions(machines: tuple[str, ...], unknown_machine: str) -> None:
    """PostgreSQL: ``idcard_publish()`` over the rows a statement added to the history (each
    row's machine checked, then the outbox rows written in the rows' order), and
    ``idcard_guard_moves(machine)`` over the rows an UPDATE of a state table changed."""
    known = ", ".join(f"'{m}'" for m in machines)
    schema = _schema()
    allowed = name("allowed_transitions")
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION idcard_publish() RETURNS trigger LANGUAGE plpgsql
        SET search_path = "{schema}", pg_temp AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM {ADDED_ROWS} WHERE machine NOT IN ({known})) THEN
                RAISE EXCEPTION USING ERRCODE = '23000', MESSAGE = '{unknown_machine}';
            END IF;
            INSERT INTO {name("outbox")} (machine, record_id, seq, event, state, at, acked_at)
            SELECT machine, record_id, seq, event, to_state, at, NULL
            FROM {ADDED_ROWS} ORDER BY id;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION idcard_guard_moves() RETURNS trigger LANGUAGE plpgsql
        SET search_path = "{schema}", pg_temp AS $$
        DECLARE
            wrong record;
        BEGIN
            -- A record keeps its id (its fixed columns' trigger refuses a new one first): a
            -- row on one side only is a changed id all the same.
            SELECT o.state AS from_state, n.state AS to_state INTO wrong
            FROM {MOVED_FROM} o FULL JOIN {MOVED_TO} n ON n.id = o.id
            WHERE o.id IS NULL OR n.id IS NULL
               OR n.version IS DISTINCT FROM o.version + 1
               OR NOT EXISTS (
                   SELECT 1 FROM {allowed} a
                   WHERE a.machine = TG_ARGV[0]
                     AND a.from_state = o.state AND a.to_state = n.state)
            LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION USING ERRCODE = '23000', MESSAGE = format(
                    '{PREFIX}a %s record changes only by an allowed transition from %s '
                    'that bumps its version by one (%s -> %s refused)',
                    TG_ARGV[0], wrong.from_state, wrong.from_state, wrong.to_state);
            END IF;
            RETURN NULL;
        END $$
        """
    )


def publish_added() -> None:
    """PostgreSQL: the history's publishing trigger runs once per statement."""
    log = name("transition_log")
    op.execute(f"DROP TRIGGER {log}_publish ON {log}")
    op.execute(
        f"CREATE TRIGGER {log}_publish AFTER INSERT ON {log} "
        f"REFERENCING NEW TABLE AS {ADDED_ROWS} "
        "FOR EACH STATEMENT EXECUTE FUNCTION idcard_publish()"
    )


def publish_each_row(machines: tuple[str, ...], unknown_machine: str) -> None:
    """PostgreSQL: back to the publishing trigger of revision 0009, once per row."""
    log = name("transition_log")
    op.execute(f"DROP TRIGGER {log}_publish ON {log}")
    op.execute("DROP FUNCTION idcard_publish()")
    install_publish_function_for(machines, unknown_machine)
    op.execute(
        f"CREATE TRIGGER {log}_publish AFTER INSERT ON {log} "
        "FOR EACH ROW EXECUTE FUNCTION idcard_publish()"
    )


def guard_moves(table: str, machine: str, initial: str) -> None:
    """PostgreSQL: a state table's new records are still checked row by row (a command
    creates one at a time); its updates once per statement, over every row changed."""
    table = name(table)
    op.execute(f"DROP TRIGGER {table}_guard ON {table}")
    op.execute(
        f"CREATE TRIGGER {table}_guard BEFORE INSERT ON {table} FOR EACH ROW "
        f"EXECUTE FUNCTION idcard_guard_record('{machine}', '{initial}')"
    )
    op.execute(
        f"CREATE TRIGGER {table}_moves AFTER UPDATE ON {table} "
        f"REFERENCING OLD TABLE AS {MOVED_FROM} NEW TABLE AS {MOVED_TO} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION idcard_guard_moves('{machine}')"
    )


def guard_each_move(table: str, machine: str, initial: str) -> None:
    """PostgreSQL: back to revision 0003's row-level guard of inserts and updates."""
    prefixed = name(table)
    op.execute(f"DROP TRIGGER {prefixed}_moves ON {prefixed}")
    op.execute(f"DROP TRIGGER {prefixed}_guard ON {prefixed}")
    guard_records(table, machine, initial)


def drop_statement_functions() -> None:
    op.execute("DROP FUNCTION idcard_guard_moves()")
