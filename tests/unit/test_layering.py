"""The direction of dependencies, checked by walking every module's imports (STYLE.md)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"

# One third-party library, one home.
LIBRARY_HOMES = {
    "apscheduler": {"schedule/scheduler.py"},
    "aiosmtplib": {"mail/smtp.py"},
    "feedparser": {"sources/"},
    "jinja2": {"render/", "web/"},
    "css_inline": {"render/"},
    "alembic": {"store/"},
    "sqlalchemy": {"store/"},
    "httpx": {"ingest/"},
    "starlette": {"web/", "daemon.py"},
    "uvicorn": {"daemon.py", "web/"},
    "itsdangerous": {"web/tokens.py"},
    "procrastinate": {"runner/"},
    "pydantic": {"config/"},
    # optional (the embeddings extra), imported by name inside the adapter only
    "torch": {"match/embedding.py"},
    "sentence_transformers": {"match/embedding.py"},
    "transformers": {"match/embedding.py"},
}

# Which stage packages each stage may import (besides domain, errors and itself).
STAGES = {"sources", "ingest", "store", "match", "render", "mail", "schedule", "web"}
ALLOWED = {
    "ingest": {"sources"},
    "store": set(),
    "sources": set(),
    "match": set(),
    "render": set(),
    "mail": set(),
    "schedule": set(),
    "web": set(),
}


@functools.cache  # parsed once per run: every test walks the same files
def modules() -> tuple[tuple[str, ast.Module], ...]:
    return tuple(
        (str(p.relative_to(PACKAGE)), ast.parse(p.read_text(encoding="utf-8")))
        for p in sorted(PACKAGE.rglob("*.py"))
        if "migrations" not in p.parts
    )


@functools.cache
def imported(tree: ast.Module) -> frozenset[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif (  # importlib.import_module("name") or a helper of ours given a literal name
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            in ("import_module", "_library")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return frozenset(names)


def _home(rel: str, homes: set[str]) -> bool:
    return any(rel == h or (h.endswith("/") and rel.startswith(h)) for h in homes)


@pytest.mark.parametrize("library", sorted(LIBRARY_HOMES))
def test_each_library_has_one_home(library: str) -> None:
    offenders = [
        rel
        for rel, tree in modules()
        if any(n == library or n.startswith(library + ".") for n in imported(tree))
        and not _home(rel, LIBRARY_HOMES[library])
    ]
    assert offenders == [], f"{library} imported outside {sorted(LIBRARY_HOMES[library])}"


def test_stages_do_not_import_each_other_or_the_composition() -> None:
    problems = []
    for rel, tree in modules():
        stage = rel.split("/")[0]
        if stage not in STAGES:
            continue
        for name in imported(tree):
            parts = name.split(".")
            if parts[0] != "pipeline" or len(parts) < 2:
                continue
            target = parts[1]
            if target in ("domain", "errors", stage):
                continue
            if target not in ALLOWED[stage]:
                problems.append(f"{rel} imports {name}")
    assert problems == []


def test_only_config_and_cli_read_the_environment() -> None:
    readers = []
    for rel, tree in modules():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("environ", "getenv")
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ):
                readers.append(rel)
    # match/embedding.py only *sets* the Hugging Face offline switches before importing
    # those libraries (they read them once): a model must never be downloaded.
    assert sorted(set(readers)) == sorted(
        r
        for r in set(readers)
        if r.startswith("config/") or r in ("cli.py", "daemon.py", "match/embedding.py")
    ), sorted(set(readers))


# The entry points reach the stages only through the application layer (pipeline/app.py).
ENTRY_POINTS = {
    "cli.py": {"app", "config", "errors", "logs", "daemon", "runner"},
    # the daemon wires the clock (schedule) and the web app (web) around the application,
    # and defers the runner's jobs (runner = "procrastinate")
    "daemon.py": {"app", "config", "errors", "schedule", "web", "runner"},
}
# The runner's tasks are thin wrappers over the application's use cases: they reach the
# stages only through it (domain: the Mailer port a worker holds for its life).
RUNNER_REACHES = {"app", "config", "domain", "errors", "logs", "runner"}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_entry_points_call_only_the_application_layer(entry: str) -> None:
    tree = dict(modules())[entry]
    reached = {
        name.split(".")[1]
        for name in imported(tree)
        if name.startswith("pipeline.") and len(name.split(".")) > 1
    }
    assert reached <= ENTRY_POINTS[entry], sorted(reached - ENTRY_POINTS[entry])


def test_the_runner_calls_only_the_application_layer() -> None:
    found = [rel for rel, _ in modules() if rel.startswith("runner/")]
    assert found, "pipeline/runner/ is missing"
    reached = {
        (rel, name.split(".")[1])
        for rel, tree in modules()
        if rel.startswith("runner/")
        for name in imported(tree)
        if name.startswith("pipeline.") and len(name.split(".")) > 1
    }
    assert sorted(r for r in reached if r[1] not in RUNNER_REACHES) == []


def test_the_application_layer_is_not_imported_by_the_stages_it_drives() -> None:
    offenders = [
        rel
        for rel, tree in modules()
        if rel not in ("app.py", *ENTRY_POINTS)
        and not rel.startswith("runner/")  # an entry point too: the worker's tasks
        and any(n == "pipeline.app" or n.startswith("pipeline.app.") for n in imported(tree))
    ]
    assert offenders == []
