"""DDL that makes the database itself refuse illegal transitions, for SQLite and PostgreSQL.

Used by the revisions; each function emits DDL for the dialect of the migration's connection.
Frozen: a revision that has shipped must keep producing the same DDL, so change nothing here
that a shipped revision calls; add new functions instead.
"""

from __future__ import annotations

from alembic import op

PREFIX = "idcard-workflow: "
APPEND_ONLY = PREFIX + "the transition log is append-only"
FROZEN_TABLE = PREFIX + "allowed_transitions is changed by migrations only"


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def install_functions() -> None:
    """PostgreSQL's trigger functions (SQLite triggers carry their own bodies)."""
    if _sqlite():
        return
    op.execute(
        """
        CREATE FUNCTION idcard_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION USING ERRCODE = '23000', MESSAGE = TG_ARGV[0];
        END $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION idcard_guard_record() RETURNS trigger LANGUAGE plpgsql AS $$
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
                    SELECT 1 FROM allowed_transitions a
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
    if _sqlite():
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER transition_log_no_{action.lower()} BEFORE {action} "
                f"ON transition_log BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
            )
        # SQLite enforces the foreign key only where PRAGMA foreign_keys is on: check here too.
        op.execute(
            "CREATE TRIGGER transition_log_allowed BEFORE INSERT ON transition_log "
            "WHEN NEW.from_state IS NOT NULL AND NOT EXISTS ("
            "SELECT 1 FROM allowed_transitions a WHERE a.machine = NEW.machine "
            "AND a.event = NEW.event AND a.from_state = NEW.from_state "
            "AND a.to_state = NEW.to_state) "
            f"BEGIN SELECT RAISE(ABORT, '{PREFIX}not an allowed transition'); END"
        )
        return
    op.execute(
        "CREATE TRIGGER transition_log_append_only BEFORE UPDATE OR DELETE ON transition_log "
        f"FOR EACH ROW EXECUTE FUNCTION idcard_refuse('{APPEND_ONLY}')"
    )
    op.execute(
        "CREATE TRIGGER transition_log_no_truncate BEFORE TRUNCATE ON transition_log "
        f"FOR EACH STATEMENT EXECUTE FUNCTION idcard_refuse('{APPEND_ONLY}')"
    )


def unguard_log() -> None:
    if _sqlite():
        for name in (
            "transition_log_no_update",
            "transition_log_no_delete",
            "transition_log_allowed",
        ):
            op.execute(f"DROP TRIGGER {name}")
        return
    op.execute("DROP TRIGGER transition_log_no_truncate ON transition_log")
    op.execute("DROP TRIGGER transition_log_append_only ON transition_log")


def freeze_allowed_transitions() -> None:
    """Refuse every change to allowed_transitions (a revision unfreezes it to add rows)."""
    if _sqlite():
        for action in ("INSERT", "UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER allowed_transitions_no_{action.lower()} BEFORE {action} "
                f"ON allowed_transitions BEGIN SELECT RAISE(ABORT, '{FROZEN_TABLE}'); END"
            )
        return
    op.execute(
        "CREATE TRIGGER allowed_transitions_frozen BEFORE INSERT OR UPDATE OR DELETE "
        f"ON allowed_transitions FOR EACH ROW EXECUTE FUNCTION idcard_refuse('{FROZEN_TABLE}')"
    )
    op.execute(
        "CREATE TRIGGER allowed_transitions_no_truncate BEFORE TRUNCATE ON allowed_transitions "
        f"FOR EACH STATEMENT EXECUTE FUNCTION idcard_refuse('{FROZEN_TABLE}')"
    )


def unfreeze_allowed_transitions() -> None:
    if _sqlite():
        for action in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER allowed_transitions_no_{action}")
        return
    op.execute("DROP TRIGGER allowed_transitions_no_truncate ON allowed_transitions")
    op.execute("DROP TRIGGER allowed_transitions_frozen ON allowed_transitions")


def guard_records(table: str, machine: str, initial: str) -> None:
    """A state table: records start in ``initial`` at version 1 and change only by an allowed
    transition that bumps the version by one."""
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
            f"SELECT 1 FROM allowed_transitions a WHERE a.machine = '{machine}' "
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
    if _sqlite():
        op.execute(f"DROP TRIGGER {table}_update_guard")
        op.execute(f"DROP TRIGGER {table}_insert_guard")
        return
    op.execute(f"DROP TRIGGER {table}_guard ON {table}")


def publish_log() -> None:
    """Every history row writes its outbox row, whoever inserts it."""
    if _sqlite():
        op.execute(
            "CREATE TRIGGER transition_log_publish AFTER INSERT ON transition_log BEGIN "
            "INSERT INTO outbox (machine, record_id, seq, event, state, at, acked_at) "
            "VALUES (NEW.machine, NEW.record_id, NEW.seq, NEW.event, NEW.to_state, NEW.at, NULL); "
            "END"
        )
        return
    op.execute(
        """
        CREATE FUNCTION idcard_publish() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO outbox (machine, record_id, seq, event, state, at, acked_at)
            VALUES (NEW.machine, NEW.record_id, NEW.seq, NEW.event, NEW.to_state, NEW.at, NULL);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER transition_log_publish AFTER INSERT ON transition_log "
        "FOR EACH ROW EXECUTE FUNCTION idcard_publish()"
    )


def unpublish_log() -> None:
    if _sqlite():
        op.execute("DROP TRIGGER transition_log_publish")
        return
    op.execute("DROP TRIGGER transition_log_publish ON transition_log")
    op.execute("DROP FUNCTION idcard_publish()")
