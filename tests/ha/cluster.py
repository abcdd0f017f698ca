"""A PostgreSQL primary and its synchronous standby on this machine, for the failover tests.

    cluster = Cluster.create(Path(mkdtemp()))   # initdb, start, pg_basebackup -R, start
    cluster.url          # the multi-host URL a writer uses (target_session_attrs=read-write)
    cluster.kill_primary()   # SIGKILL to the postmaster and every process of its server
    cluster.promote()        # the standby becomes the primary (pg_ctl promote)
    cluster.rebuild_standby()  # the dead node comes back as a standby of the new primary

Both servers listen on unix sockets only, each in its own folder (``a/`` and ``b/``), on ports
of their own. The primary commits only once its standby has the WAL on disk
(``synchronous_commit = on``, ``synchronous_standby_names`` naming the standby). A standby is
made with ``pg_basebackup -R`` and has ``synchronous_standby_names`` empty: promoted, it runs
alone until a new standby is attached (`rebuild_standby` names that one in its settings).

The binaries are found as ``.ci/with-postgres`` finds them (the newest
``/usr/lib/postgresql/*/bin``, or ``IDCARD_PG_BINDIR``); run as root, the servers run as the
``postgres`` user, which PostgreSQL requires.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

DATABASE = "idcard_ha"
_PORT = int(os.environ.get("IDCARD_HA_PORT", "55442"))
PORTS = (_PORT, _PORT + 1)
"""The two nodes' ports (only the name of each socket file: nothing listens on TCP)."""


def find_bindir() -> Path | None:
    """The PostgreSQL server's binaries, or None when the server is not installed."""
    named = os.environ.get("IDCARD_PG_BINDIR")
    candidates = (
        [Path(named)]
        if named
        else sorted(
            Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version(p.parent.name)
        )
    )
    for bindir in reversed(candidates):
        if (bindir / "initdb").is_file() and (bindir / "pg_basebackup").is_file():
            return bindir
    return None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _as_owner() -> list[str]:
    """The prefix that runs a server command as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:  # pragma: no cover - util-linux is everywhere Debian's package is
        raise RuntimeError("running as root needs runuser to start PostgreSQL as postgres")
    return [runuser, "-u", "postgres", "--"]


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


@dataclass
class Node:
    """One server: its data folder, its socket folder and port, its log."""

    name: str
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / f"{self.name}-data"

    @property
    def socket_dir(self) -> Path:
        return self.root / self.name

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}.log"

    def url(self, database: str = DATABASE) -> str:
        """A URL for this node alone."""
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} user=postgres dbname={database}"

    def pid(self) -> int | None:
        """The postmaster's pid, from its pid file, if the server runs."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        return pid if _alive(pid) else None


class Cluster:
    """A primary and a synchronous standby. ``primary`` and ``standby`` swap on a failover."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.nodes = (Node("a", root, PORTS[0]), Node("b", root, PORTS[1]))
        self.primary = self.nodes[0]
        self.standby: Node | None = self.nodes[1]

    # -- set-up --------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, bindir: Path | None = None) -> Cluster:
        """initdb the primary, start it, make the database, attach a synchronous standby."""
        found = bindir or find_bindir()
        if found is None:
            raise RuntimeError("PostgreSQL's server binaries are not installed")
        _chown(root)
        cluster = cls(found, root)
        primary = cluster.primary
        for node in cluster.nodes:
            node.socket_dir.mkdir()
            node.socket_dir.chmod(0o755)
            _chown(node.socket_dir)
        cluster._run(
            "initdb",
            "-D", str(primary.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        cluster._configure(primary, standby_names="")
        cluster._start(primary)
        subprocess.run(
            [str(found / "createdb"), "-h", str(primary.socket_dir), "-p", str(primary.port),
             "-U", "postgres", DATABASE],
            check=True, capture_output=True,
        )  # fmt: skip
        assert cluster.standby is not None
        cluster._attach(cluster.standby)
        return cluster

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [*_as_owner(), str(self.bindir / program), *args]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            output = done.stderr or done.stdout
            raise RuntimeError(f"{program} failed ({done.returncode}): {output}")
        return done

    def _configure(self, node: Node, *, standby_names: str) -> None:
        """The node's settings, waiting at each commit for the standby ``standby_names`` names
        (none when empty)."""
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{node.socket_dir}'",
            "port": str(node.port),
            "max_connections": "100",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "wal_keep_size": "'256MB'",
            "hot_standby": "on",
            "synchronous_commit": "on",
            "synchronous_standby_names": f"'{standby_names}'",
            "cluster_name": f"'{node.name}'",
            "fsync": "on",
            "shared_buffers": "'32MB'",
            "wal_receiver_status_interval": "'1s'",
            "hot_standby_feedback": "on",
        }
        lines = "".join(f"{k} = {v}\n" for k, v in settings.items())
        with (node.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/ha/cluster.py\n" + lines)

    def _start(self, node: Node) -> None:
        try:
            self._run(
                "pg_ctl", "-D", str(node.data), "-l", str(node.log), "-w", "-t", "60", "start"
            )
        except RuntimeError as exc:
            log = node.log.read_text()[-3000:] if node.log.exists() else ""
            raise RuntimeError(f"{exc}\n== {node.log}\n{log}") from None

    def _attach(self, node: Node) -> None:
        """Make ``node`` a fresh standby of the primary (pg_basebackup -R) and start it; wait
        until the primary counts it as its synchronous standby."""
        if node.data.exists():
            shutil.rmtree(node.data)
        primary = self.primary
        self._run(
            "pg_basebackup",
            "-D", str(node.data),
            "-d", f"{primary.conninfo()} application_name={node.name}",
            "-R", "-X", "stream", "-c", "fast", "--no-sync",
        )  # fmt: skip
        # This node's own settings, and none of a primary's: promoted, it commits alone (it has
        # no standby to wait for) until a new standby is attached.
        conf = node.data / "postgresql.conf"
        conf.write_text(conf.read_text().split("\n# tests/ha/cluster.py\n")[0])
        self._configure(node, standby_names="")
        # The socket's lock file a killed server left names its dead postmaster's pid, which a
        # busy machine may have given to another process by now: PostgreSQL would then refuse
        # to start ("Is another postmaster running?"). This node's server is not running.
        for stale in node.socket_dir.glob(".s.PGSQL.*"):
            stale.unlink()
        self._start(node)
        self.standby = node
        self._set_standby_names(primary, node.name)
        self.wait_for_sync()

    def _other(self, node: Node) -> Node:
        return self.nodes[1] if node is self.nodes[0] else self.nodes[0]

    def _set_standby_names(self, node: Node, names: str) -> None:
        # In postgresql.conf (the last line wins), not ALTER SYSTEM: postgresql.auto.conf is
        # copied by every base backup, and a standby made from it must not wait for anyone.
        with (node.data / "postgresql.conf").open("a") as conf:
            conf.write(f"synchronous_standby_names = '{names}'\n")
        self._run("pg_ctl", "-D", str(node.data), "reload")

    def wait_for_sync(self, timeout: float = 30) -> None:
        """Until the primary reports its standby as ``sync`` and streaming."""
        assert self.standby is not None
        engine = sa.create_engine(self.primary.url("postgres"))
        deadline = time.monotonic() + timeout
        try:
            while True:
                with engine.connect() as conn:
                    state = conn.execute(
                        sa.text(
                            "SELECT sync_state, state FROM pg_stat_replication "
                            "WHERE application_name = :name"
                        ),
                        {"name": self.standby.name},
                    ).first()
                if state is not None and tuple(state) == ("sync", "streaming"):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the standby never became synchronous: {state}")
                time.sleep(0.05)
        finally:
            engine.dispose()

    # -- what the tests use --------------------------------------------------------------

    def url(self, *, extra: str = "") -> str:
        """The multi-host URL: both sockets and ports, to a read-write server only."""
        hosts = ",".join(str(n.socket_dir) for n in self.nodes)
        ports = ",".join(str(n.port) for n in self.nodes)
        url = (
            f"postgresql+psycopg://postgres@/{DATABASE}?host={hosts}&port={ports}"
            "&target_session_attrs=read-write&connect_timeout=5"
        )
        return url + (f"&{extra}" if extra else "")

    def read_url(self) -> str:
        """The multi-host URL of a reader: a standby while there is one, else the primary."""
        return self.url().replace("read-write", "prefer-standby")

    def kill_primary(self) -> None:
        """SIGKILL to the primary's postmaster and then to every process of its server, as if
        the machine had died: nothing of it gets to write, send or answer again."""
        node = self.primary
        pid = node.pid()
        if pid is None:
            raise RuntimeError("the primary is not running")
        children = _children(pid)
        os.kill(pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in (pid, *children)):
            if time.monotonic() > deadline:
                raise RuntimeError("the primary's processes outlived SIGKILL")
            time.sleep(0.01)

    def promote(self) -> None:
        """The standby becomes the primary; the old primary is now the one without a server."""
        assert self.standby is not None, "no standby to promote"
        node = self.standby
        self._run("pg_ctl", "-D", str(node.data), "-w", "-t", "60", "promote")
        self.primary, self.standby = node, None

    def rebuild_standby(self) -> None:
        """The node that is not the primary becomes its synchronous standby again, from a new
        base backup (what an operator does with a failed primary once the new one runs)."""
        node = self._other(self.primary)
        if node.pid() is not None:
            self._run("pg_ctl", "-D", str(node.data), "-m", "immediate", "-w", "stop")
        self._attach(node)

    def repair(self) -> None:
        """Back to a primary and a synchronous standby, whatever a test left: a dead primary
        is failed over, a missing standby rebuilt."""
        if self.primary.pid() is None and self.standby is not None:
            self.promote()
        if not self.healthy():
            self.rebuild_standby()

    def healthy(self) -> bool:
        """Both servers run, the standby streaming synchronously."""
        if self.standby is None or self.primary.pid() is None or self.standby.pid() is None:
            return False
        try:
            self.wait_for_sync(timeout=5)
        except (RuntimeError, sa.exc.OperationalError):
            return False
        return True

    def wait_for_replay(self, timeout: float = 30) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        assert self.standby is not None
        primary = sa.create_engine(self.primary.url("postgres"))
        standby = sa.create_engine(self.standby.url("postgres"))
        try:
            with primary.connect() as conn:
                lsn = conn.execute(sa.text("SELECT pg_current_wal_lsn()")).scalar_one()
            deadline = time.monotonic() + timeout
            while True:
                with standby.connect() as conn:
                    caught_up = conn.execute(
                        sa.text("SELECT pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn)"),
                        {"lsn": str(lsn)},
                    ).scalar_one()
                if caught_up:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the standby never replayed up to {lsn}")
                time.sleep(0.02)
        finally:
            primary.dispose()
            standby.dispose()

    def stop(self) -> None:
        for node in self.nodes:
            if node.pid() is not None:
                with contextlib.suppress(RuntimeError):
                    self._run("pg_ctl", "-D", str(node.data), "-m", "immediate", "-w", "stop")

    def logs(self) -> str:
        return "\n".join(
            f"== {n.log}\n{n.log.read_text()[-4000:]}" for n in self.nodes if n.log.exists()
        )


def _children(pid: int) -> Sequence[int]:
    """The processes whose parent is ``pid`` (a server's backends and helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the fields after it.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
