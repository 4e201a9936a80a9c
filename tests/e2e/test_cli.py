"""The command line, run in-process through ``pipeline.cli.main``."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from pipeline.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_summarises_a_valid_config(write_config, capsys) -> None:
    path = write_config()
    code, out, _ = run(capsys, "check", str(path))
    assert code == 0
    assert out.startswith(f"{path}: OK\n")
    assert re.search(r"^daily-papers-001 +feed ", out, re.M)
    assert "zoe@lab.example" in out and "Pacific/Auckland" in out


def test_check_reports_every_problem_and_fails(write_config, capsys) -> None:
    path = write_config(subscribers='\n[[subscribers]]\nemail = "nope"\ntimezone = "Mars/Base"\n')
    code, out, err = run(capsys, "check", str(path))
    assert code == 1
    assert out == ""
    assert "2 problems" in err
    assert "subscribers[0].email: not a valid email address" in err
    assert "subscribers[0].timezone: expected an IANA time zone" in err


def test_check_flags_a_broken_operator_template(write_config, tmp_path: Path, capsys) -> None:
    templates = tmp_path / "mytemplates"
    templates.mkdir()
    (templates / "digest.html.j2").write_text("{% for x in %}broken", encoding="utf-8")
    (templates / "digest.txt.j2").write_text("ok", encoding="utf-8")
    path = write_config()
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("[render]\n", f'[render]\ntemplate_dir = "{templates}"\n'))
    code, _, err = run(capsys, "check", str(path))
    assert code == 1
    assert "digest.html.j2" in err


def test_run_once_twice(write_config, capsys) -> None:
    path = write_config()
    code, out, _ = run(capsys, "-c", str(path), "run", "--once", "--previews")
    assert code == 0
    assert "delivered 3 digests" in out
    assert "ada@lab.example" in out and "HTML preview" in out
    code, out, _ = run(capsys, "-c", str(path), "run", "--once")
    assert code == 0
    assert "nothing new to deliver" in out


def test_preview_writes_html_and_sends_nothing(write_config, tmp_path: Path, capsys) -> None:
    path = write_config()
    assert run(capsys, "-c", str(path), "ingest")[0] == 0
    code, out, _ = run(capsys, "-c", str(path), "preview", "ada@lab.example")
    assert code == 0
    html_file = Path(out.strip())
    assert html_file.parent == tmp_path / "previews"
    assert "<html" in html_file.read_text(encoding="utf-8").lower()
    assert not (tmp_path / "maildir").exists() or not any((tmp_path / "maildir").rglob("*.*"))
    code, _, err = run(capsys, "-c", str(path), "preview", "nobody@lab.example")
    assert code == 1
    assert "no subscriber 'nobody@lab.example'" in err


def test_status_resubscribe_and_explain(write_config, capsys) -> None:
    path = write_config()
    run(capsys, "-c", str(path), "run", "--once")
    code, out, _ = run(capsys, "-c", str(path), "status")
    assert code == 0
    assert "outbox: sent 3" in out
    assert "hf-daily" in out
    code, out, _ = run(capsys, "-c", str(path), "resubscribe", "ada@lab.example")
    assert out.strip() == "ada@lab.example: was not unsubscribed; nothing changed"
    code, out, _ = run(capsys, "-c", str(path), "explain", "zoe@lab.example", "2607.27958")
    assert code == 0
    assert "paper 2607.27958" in out
    code, _, err = run(capsys, "-c", str(path), "explain", "zoe@lab.example", "9999.99999")
    assert code == 1
    assert "not in the database" in err


def test_db_upgrade(write_config, capsys) -> None:
    code, out, _ = run(capsys, "-c", str(write_config()), "db", "upgrade")
    assert code == 0
    assert out.startswith("database at revision ")


def test_missing_config_is_a_clean_error(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "-c", str(tmp_path / "absent.toml"), "check")
    assert code == 1
    assert "absent.toml: 1 problem" in err and "file not found" in err


def test_json_logs_carry_subscriber_and_outbox_ids(write_config, capsys) -> None:
    import json

    path = write_config()
    code, _, err = run(capsys, "--log-json", "-v", "-c", str(path), "run", "--once")
    assert code == 0
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    sent = [e for e in events if e["message"].startswith("sent digest")]
    assert len(sent) == 3
    assert all(isinstance(e["delivery"], int) and "@" in e["subscriber"] for e in sent)
    assert {e["source"] for e in events if "source" in e} >= {"hf-daily", "daily-papers-001"}
    assert "test-secret" not in err


def test_subscribers_list_import_and_unsubscribe(write_config, tmp_path: Path, capsys) -> None:
    path = write_config()
    run(capsys, "-c", str(path), "ingest")  # syncs the config's three readers
    bulk = tmp_path / "readers.csv"
    bulk.write_text(
        "email,timezone,categories\n"
        "bulk1@lab.example,Europe/Paris,cs.LG\n"
        "ada@lab.example,UTC,cs.CV\n",
        encoding="utf-8",
    )
    code, out, _ = run(capsys, "-c", str(path), "subscribers", "import", str(bulk))
    assert code == 0
    assert "1 added, 0 updated, 1 skipped (the config file owns them)" in out
    code, out, _ = run(capsys, "-c", str(path), "subscribers", "list", "--origin", "import")
    assert code == 0
    assert re.search(r"^bulk1@lab\.example +active +import +1 +Europe/Paris", out, re.M)
    assert "ada@lab.example" not in out
    code, out, _ = run(capsys, "-c", str(path), "subscribers", "unsubscribe", "bulk1@lab.example")
    assert (code, out.strip()) == (0, "bulk1@lab.example: unsubscribed")
    code, _, err = run(capsys, "-c", str(path), "subscribers", "unsubscribe", "who@lab.example")
    assert code == 1 and "no subscriber 'who@lab.example'" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"email": "x@lab.example", "timezone": "Mars/Base"}\n', encoding="utf-8")
    code, _, err = run(capsys, "-c", str(path), "subscribers", "import", str(bad))
    assert code == 1
    assert f"{bad}:1: timezone: expected an IANA time zone" in err
    assert "Traceback" not in err


def test_outbox_and_requeue_commands(write_config, capsys) -> None:
    path = write_config()
    run(capsys, "-c", str(path), "run", "--once")
    code, out, _ = run(capsys, "-c", str(path), "outbox", "--status", "sent")
    assert code == 0
    assert len(re.findall(r"@lab\.example +\S+ +sent ", out)) == 3
    code, out, _ = run(capsys, "-c", str(path), "outbox", "--subscriber", "zoe@lab.example")
    assert "zoe@lab.example" in out and "ada@lab.example" not in out
    code, _, err = run(capsys, "-c", str(path), "requeue")
    assert code == 1 and "name the digests" in err
    code, out, _ = run(capsys, "-c", str(path), "requeue", "--all")
    assert (code, out.split()[0]) == (0, "0")  # nothing failed or ambiguous
    code, _, err = run(capsys, "-c", str(path), "outbox", "--subscriber", "nobody@lab.example")
    assert code == 1 and "no subscriber 'nobody@lab.example'" in err
    code, _, err = run(capsys, "-c", str(path), "outbox", "--status", "lost")
    assert code == 1 and "no outbox state 'lost'; the states are pending, claimed" in err


def test_read_only_commands_run_without_secrets(write_config, monkeypatch, capsys) -> None:
    path = write_config()
    run(capsys, "-c", str(path), "run", "--once")
    monkeypatch.delenv("PAPERPOST_TEST_SECRET")
    for argv in (["status"], ["outbox"], ["subscribers", "list"]):
        code, _, err = run(capsys, "-c", str(path), *argv)
        assert code == 0, (argv, err)
    code, _, err = run(capsys, "-c", str(path), "explain", "zoe@lab.example", "2607.27958")
    assert code == 0, err
    code, _, err = run(capsys, "-c", str(path), "preview", "zoe@lab.example")
    assert code == 1 and "PAPERPOST_TEST_SECRET is not set" in err


def test_status_on_an_unreachable_database_is_one_clear_line(write_config, capsys) -> None:
    # A real PostgreSQL driver against a loopback port nothing listens on: the operator gets
    # one line naming the setting and the driver's reason, not a SQLAlchemy traceback.
    pytest.importorskip("psycopg", reason="the [postgres] extra is not installed")
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = write_config(db_url=f"postgresql+psycopg://nobody@127.0.0.1:{port}/none")
    code, _, err = run(capsys, "-c", str(path), "status")
    assert code == 1
    assert err.startswith("paperpost: error: cannot use the database ([database] url):")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
