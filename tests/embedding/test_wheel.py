"""The built wheel as a host installs it: one import root, typed, migrations inside; the host's
own ``models`` and ``migrations`` beside it in either import order."""

from __future__ import annotations

import json
import re
import zipfile

import pytest

from tests.embedding.conftest import HostProject, Wheel


def test_the_wheel_installs_workflow_only_with_py_typed_and_its_migrations(wheel: Wheel) -> None:
    names = wheel.names()
    top = {name.split("/")[0] for name in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"workflow"}, sorted(top)
    assert len(dist_info) == 1
    assert "workflow/py.typed" in names
    assert "workflow/migrations/env.py" in names
    assert "workflow/migrations/script.py.mako" in names
    versions = [
        n for n in names
        if re.fullmatch(r"workflow/migrations/versions/[^/]+\.py", n)
        and not n.endswith("__init__.py")
    ]  # fmt: skip
    assert len(versions) >= 5, versions
    with zipfile.ZipFile(wheel.path) as archive:
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")] or [None]
        if top_level is not None:
            assert archive.read(top_level).decode().split() == ["workflow"]
    site = next((wheel.venv / "lib").glob("python*/site-packages"))
    assert not (site / "models").exists() and not (site / "migrations").exists()


IMPORTS = """
import json, sys
if sys.argv[1] == "host_first":
    import models
    import workflow as wf
else:
    import workflow as wf
    import models
import migrations
import flask_app
wf.upgrade(sys.argv[2])
import sqlalchemy as sa
engine = sa.create_engine(sys.argv[2])
tables = sorted(sa.inspect(engine).get_table_names())
engine.dispose()
print(json.dumps({
    "models": models.__file__,
    "migrations": migrations.__file__,
    "models_after_upgrade": sys.modules["models"].__file__,
    "migrations_after_upgrade": sys.modules["migrations"].__file__,
    "workflow": wf.__file__,
    "same_base": models.Base is wf.Base,
    "host_tables": sorted(models.Base.metadata.tables),
    "library_tables": sorted(wf.Base.metadata.tables),
    "flask_base_tables": sorted(flask_app.db.metadata.tables),
    "tables_made_by_upgrade": tables,
}))
"""


def test_imports_in_either_order_keep_each_projects_own_modules(host: HostProject) -> None:
    for n, order in enumerate(["host_first", "library_first"]):
        url = f"sqlite:///{host.folder.parent / f'imports{n}.db'}"
        done = host.process("python", "-c", IMPORTS, order, url)
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        folder = str(host.folder)
        assert seen["models"] == f"{folder}/models.py", order
        assert seen["migrations"] == f"{folder}/migrations/__init__.py", order
        assert seen["models_after_upgrade"] == seen["models"], order
        assert seen["migrations_after_upgrade"] == seen["migrations"], order
        assert "/site-packages/workflow/" in seen["workflow"], order
        assert not seen["same_base"], order
        assert seen["host_tables"] == ["applications", "outbox", "transition_log"], order
        assert seen["flask_base_tables"] == seen["host_tables"], order
        assert seen["library_tables"], order
        assert all(t.startswith("idcard_") for t in seen["library_tables"]), seen
        # The library's env.py ran, not the host's (which would have made the host's tables,
        # and needs HOST_DATABASE_URL, unset here).
        made = seen["tables_made_by_upgrade"]
        assert "idcard_alembic_version" in made, made
        assert all(t.startswith("idcard_") for t in made), made


WRONG = """\
import uuid

import workflow as wf


def wrong(flow: wf.Workflow, form: wf.SubmitApplication, app_id: uuid.UUID) -> None:
    flow.submit(form, actor="clerk")
    view: int = flow.get(app_id)
    print(view)
"""


@pytest.fixture(scope="module")
def mypy_strict(host: HostProject) -> list[str]:
    """``mypy --strict`` from the wheel's venv on the host's typed file and a wrong one."""
    (host.folder / "typed_wrong.py").write_text(WRONG)
    done = host.process(
        "mypy", "--strict", "--no-color-output", "--no-error-summary",
        "typed_host.py", "typed_wrong.py", check=False,
    )  # fmt: skip
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def test_a_host_file_using_the_readmes_api_passes_mypy_strict(mypy_strict: list[str]) -> None:
    assert [line for line in mypy_strict if not line.startswith("typed_wrong.py")] == []


def test_mypy_reports_a_wrong_call_in_a_host_file(mypy_strict: list[str]) -> None:
    assert (
        'typed_wrong.py:7: error: Argument "actor" to "submit" of "Workflow" has incompatible '
        'type "str"; expected "Actor"  [arg-type]'
    ) in mypy_strict
    assert any(
        line.startswith("typed_wrong.py:8: error: Incompatible types in assignment")
        and '"ApplicationView"' in line
        for line in mypy_strict
    ), mypy_strict
