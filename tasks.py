#!/usr/bin/env python3
"""Project tasks that work on a fresh machine with nothing but Python 3.11+.

    python3 tasks.py demo    # make .venv, install Paperpost, run one cycle on config/demo.toml
    python3 tasks.py test    # make .venv, install Paperpost with test tools, run the test suite
    python3 tasks.py lint    # ruff + mypy --strict
    python3 tasks.py check   # lint + test (what CI runs)

The tests are in tiers by cost: ``tests/unit`` (pure and fast: no database server, socket or
subprocess), ``tests/integration`` (the store on SQLite and PostgreSQL, SMTP via aiosmtpd,
HTTP on loopback), ``tests/e2e`` (daemons, workers and kills, Postfix/Dovecot, the
browser, the packaging build, whole CLI cycles) and ``tests/soak`` (the daemon and workers
over simulated days under faults). ``python3 tasks.py test unit`` runs one tier
(likewise ``integration``, ``e2e`` and ``soak``); without a tier name it runs them all.

Other arguments after ``test`` go to pytest (``python3 tasks.py test -k outbox``,
``python3 tasks.py test unit -x -q``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

if sys.version_info < (3, 11):  # noqa: UP036 (this file must run on any python3 to say so)
    sys.exit(f"Paperpost needs Python 3.11 or newer; this is {sys.version.split()[0]}")

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def _run(*cmd: str | Path, env: dict[str, str] | None = None) -> int:
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)  # noqa: S603 (our own tools)


def ensure_venv(extra: str = "") -> None:
    """Create .venv and install the project (again only when pyproject.toml changed)."""
    if not (BIN / "python").exists():
        print(f"creating {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    spec = f".[{extra}]" if extra else "."
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + spec.encode()).hexdigest()
    marker = VENV / f".installed-{extra or 'base'}"
    if marker.exists() and marker.read_text() == digest:
        return
    print(f"installing paperpost{f'[{extra}]' if extra else ''} into {VENV} ...", flush=True)
    pip = [BIN / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if _run(*pip, "--upgrade", "pip") or _run(*pip, "--editable", spec):
        sys.exit("installation failed (see the pip output above)")
    marker.write_text(digest)


def demo(_args: list[str]) -> int:
    ensure_venv()
    return _run(BIN / "paperpost", "--config", "config/demo.toml", "run", "--once", "--previews")


TIERS = ("unit", "integration", "e2e", "soak")


def test(args: list[str]) -> int:
    ensure_venv("dev")
    if args and args[0] in TIERS:  # a tier name is its folder
        args = [f"tests/{args[0]}", *args[1:]]
    return _run(BIN / "python", "-m", "pytest", *args)


def lint(_args: list[str]) -> int:
    ensure_venv("dev")
    return (
        _run(BIN / "ruff", "check", "pipeline", "tests", "bench", "tasks.py")
        or _run(BIN / "ruff", "format", "--check", "pipeline", "tests", "bench", "tasks.py")
        or _run(BIN / "mypy")
    )


def check(args: list[str]) -> int:
    return lint([]) or test(args)


TASKS = {"demo": demo, "test": test, "lint": lint, "check": check}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        sys.exit(__doc__)
    sys.exit(TASKS[sys.argv[1]](sys.argv[2:]))
