"""Job processes load what jobs need, not what the command line or start-up needs (issue 22:
memory). Jobs are forked by the fork server, itself forked from the supervisor, so they carry
whatever the supervisor had imported when it started the server: the test looks at
``sys.modules`` inside a real child of a real fork server, started in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

NOT_FOR_JOBS = (
    "rich",  # the command line's output
    "typer",
    "click",
    "shellingham",
    "alembic",  # migrations: run in a short-lived child at start-up
    "mako",
    "httpx",  # the control client and HTTP outputs: the supervisor's
    "sounddevice",  # a real audio input only: the embedded default has none
    "scipy",
    "PIL",
    "av",
    "pyarrow",
    "jinja2",
    "starlette",
)


def _job_modules(first: str) -> list[str]:
    """Top-level modules loaded in a job child when the supervisor imported ``first``."""
    code = (
        f"import {first}\n"
        "from fieldstation.runtime.forkserver import call_in_child\n"
        "names = call_in_child(eval, \"sorted(__import__('sys').modules)\")\n"
        "import json; print(json.dumps(sorted({n.split('.')[0] for n in names})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_check_sees_a_module_the_supervisor_loaded() -> None:
    assert "tomli_w" in _job_modules("fieldstation.runtime.station, tomli_w")


def test_a_job_child_of_the_runtime_loads_nothing_jobs_do_not_need() -> None:
    loaded = _job_modules("fieldstation.runtime.station")
    assert {"numpy", "soundfile", "sqlalchemy", "fieldstation"} <= set(loaded)  # preloaded
    assert sorted(set(NOT_FOR_JOBS) & set(loaded)) == []


def test_a_job_child_of_the_lean_runner_loads_no_cli_module() -> None:
    """What ``fieldstation run`` runs the supervisor in (decision 0146; the running station's
    own supervisor: tests/runtime/test_lean_supervisor.py)."""
    loaded = _job_modules("fieldstation.cli.main, fieldstation.runtime.run")
    assert sorted({"rich", "typer", "click", "shellingham"} & set(loaded)) == []
