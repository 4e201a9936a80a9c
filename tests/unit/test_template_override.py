"""An operator's own templates (``[render] template_dir``), checked by ``paperpost check``,
and ``memo``, the templates' fragment cache, which must restrict no template.

``check`` renders the operator's templates with the sample digest
(``pipeline/render/sample.py``): a working override passes and names the directory, a
broken one fails with the template file and line, whatever went wrong in it.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.domain import Digest
from pipeline.errors import TemplateError
from pipeline.render import Renderer, sample_digest
from pipeline.render.environment import SHIPPED_TEMPLATES
from pipeline.render.renderer import Memo

# The docs' example (docs/digest.md, "Your own templates"), with a filter over memo's output.
OWN_ITEM_TXT = """\
{% macro paper(item) %}
{{ item.number }}) {{ item.paper.title }}
{% for name in item.paper.author_names %}   {{ loop.index }}: {{ name | upper }}
{% endfor %}{% if item.paper.upvotes and item.paper.upvotes > 10 %}   (popular){% endif %}
{%- endmacro %}
"""
OWN_ITEM_HTML = """\
{% macro details(p) %}<p class="tldr"><strong>TL;DR</strong> {{ p.tldr }}</p>{% endmacro %}
{% macro paper(item) %}<div class="item" id="{{ item.anchor }}">
<p class="title"><a href="{{ item.paper.url }}">{{ item.paper.title }}</a></p>
{{ memo(details, item.paper) | replace("TL;DR", "In short") }}
</div>{% endmacro %}
"""


def own_templates(config_dir: Path, files: dict[str, str]) -> Path:
    folder = config_dir / "mytemplates"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def config_with_templates(write_config, config_dir: Path) -> Path:
    """The test config with ``template_dir`` relative to its own folder."""
    path: Path = write_config()
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("[render]\n", '[render]\ntemplate_dir = "mytemplates"\n'))
    return path


def check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    code = main(["check", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


# -- paperpost check -----------------------------------------------------------------------------
def test_check_renders_a_working_override_from_the_config_directory(
    write_config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = own_templates(tmp_path, {"_item.txt.j2": OWN_ITEM_TXT, "_item.html.j2": OWN_ITEM_HTML})
    code, out, err = check(capsys, config_with_templates(write_config, tmp_path))
    assert (code, err) == (0, "")
    assert f"templates: {folder}, then the shipped ones; the sample digest renders" in out

    # What check rendered: the sample digest through the operator's macros.
    rendered = Renderer(template_dir=folder).render(sample_digest())
    assert "1) Direct Preference Optimization" in rendered.text
    assert "   1: RAFAEL RAFAILOV" in rendered.text and "   6: CHELSEA FINN" in rendered.text
    assert "(popular)" in rendered.text  # 57 upvotes
    assert "<strong>In short</strong>" in rendered.html and "TL;DR" not in rendered.html


BROKEN = [
    # (file, its text, the line check must name, what it must say)
    (
        "_item.html.j2",
        OWN_ITEM_HTML.replace("item.paper.title", "item.paper.titel"),
        3,
        "UndefinedError",
    ),
    (
        "_item.txt.j2",
        OWN_ITEM_TXT.replace("{{ item.number }})", '{{ "%d" | format("x") }}'),
        2,
        "TypeError",
    ),
    (
        "digest.txt.j2",
        "{{ digest.headline }}\n{% set n = 0 %}\n{{ digest.count // n }}\n",
        3,
        "ZeroDivisionError",
    ),
    ("subject.txt.j2", "{{ list_name }}\n{% if %}\n", 2, "Expected an expression"),
]


@pytest.mark.parametrize(("name", "text", "line", "says"), BROKEN, ids=[b[3] for b in BROKEN])
def test_check_names_the_file_and_line_of_a_broken_override(
    write_config,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    text: str,
    line: int,
    says: str,
) -> None:
    folder = own_templates(tmp_path, {name: text})
    code, out, err = check(capsys, config_with_templates(write_config, tmp_path))
    assert code == 1 and out == ""
    assert f"{folder / name}:{line}: " in err
    assert says in err
    assert "Traceback" not in err


def test_check_names_a_missing_template_dir(
    write_config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = check(capsys, config_with_templates(write_config, tmp_path))
    assert code == 1
    assert f"template directory {tmp_path / 'mytemplates'} does not exist" in err


# -- memo restricts no template ------------------------------------------------------------------
def copy_shipped(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(SHIPPED_TEMPLATES, target)
    return target


def test_memoised_html_is_styled_by_selectors_from_outside_it(tmp_path: Path) -> None:
    """A rule whose selector starts outside the memoised details (``.item .links a``) and
    a rule in the operator's own ``<style>`` block both reach the details' links."""
    own = copy_shipped(tmp_path)
    css = own / "digest.css"
    css.write_text(
        css.read_text(encoding="utf-8") + "\n.item .links a { color: #123456; }\n",
        encoding="utf-8",
    )
    shell = own / "digest.html.j2"
    shell.write_text(
        shell.read_text(encoding="utf-8").replace(
            "</head>", "<style>.container .tldr { font-style: italic; }</style>\n</head>"
        ),
        encoding="utf-8",
    )
    html = Renderer(template_dir=own).render(sample_digest()).html
    assert "memo(details, " in (own / "_item.html.j2").read_text(encoding="utf-8")
    assert html.count("color:#123456") >= 3  # the sample's links: abstract, PDF, HF ...
    assert 'class="tldr" style="' in html and "font-style:italic" in html


def test_memo_with_a_macro_that_sees_the_digest_is_never_stale(tmp_path: Path) -> None:
    """A macro imported *with context* sees the digest: memo must not reuse one reader's
    output for the next (each render makes new macro objects, so nothing is shared)."""
    own = copy_shipped(tmp_path)
    shell = own / "digest.txt.j2"
    shell.write_text(
        shell.read_text(encoding="utf-8").replace(
            '{% from "_item.txt.j2" import paper %}',
            '{% from "_item.txt.j2" import paper with context %}',
        ),
        encoding="utf-8",
    )
    item = own / "_item.txt.j2"
    item.write_text(
        item.read_text(encoding="utf-8").replace(
            "{% macro details(p) %}\n",
            "{% macro details(p) %}\n    for {{ digest.recipient_name }}\n",
        ),
        encoding="utf-8",
    )
    renderer = Renderer(template_dir=own)
    sample = sample_digest()
    for name in ("Ada Lovelace", "Alan Turing", "Ada Lovelace"):
        text = renderer.render(dataclasses.replace(sample, recipient_name=name)).text
        other = "Alan Turing" if name == "Ada Lovelace" else "Ada Lovelace"
        assert f"    for {name}" in text and f"for {other}" not in text


def test_memo_calls_a_macro_once_per_distinct_arguments() -> None:
    calls: list[tuple[object, ...]] = []

    def macro(*args: object) -> str:
        calls.append(args)
        return f"out{len(calls)}"

    memo = Memo(size=4)
    assert [memo(macro, "a"), memo(macro, "a"), memo(macro, "b"), memo(macro, "a", 1)] == [
        "out1",
        "out1",
        "out2",
        "out3",
    ]
    assert calls == [("a",), ("b",), ("a", 1)]
    # Arguments that cannot be hashed are no error: the macro runs each time.
    assert [memo(macro, ["x"]), memo(macro, ["x"])] == ["out4", "out5"]
    memo(macro, "c")  # a fourth entry: full
    memo.trim()  # cleared between digests, never within one
    assert memo(macro, "a") == "out7"


def test_memo_output_is_what_a_direct_call_gives(tmp_path: Path) -> None:
    """The shipped templates with and without memo give the same digests."""
    own = copy_shipped(tmp_path)
    for name in ("_item.html.j2", "_item.txt.j2"):
        path = own / name
        path.write_text(
            path.read_text(encoding="utf-8").replace(
                "memo(details, item.paper)", "details(item.paper)"
            ),
            encoding="utf-8",
        )
    memoised, direct = Renderer(), Renderer(template_dir=own)
    sample = sample_digest()
    digests: list[Digest] = [
        sample,
        dataclasses.replace(sample, recipient_name="Alan", items=sample.items[::-1]),
        dataclasses.replace(sample, trending=()),
    ]
    for d in digests:
        assert memoised.render(d) == direct.render(d)


def test_a_bug_outside_the_templates_is_not_reported_as_a_template_error(
    tmp_path: Path,
) -> None:
    """Only an error raised inside a template is turned into ``file:line``."""
    renderer = Renderer()

    def broken(*_: object) -> None:
        raise ValueError("not a template's fault")

    renderer._layout = broken  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="not a template's fault"):
        renderer.render(sample_digest())
    with pytest.raises(TemplateError):
        own = own_templates(tmp_path, {"subject.txt.j2": "{{ 1 // 0 }}\n"})
        Renderer(template_dir=own).render(sample_digest())
