"""Where templates come from and how Jinja2 is set up.

The shipped templates live in ``<repo>/templates``: found there when Paperpost
runs from a checkout (``pip install -e .``), and in
``<prefix>/share/paperpost/templates`` when it was installed from a wheel, which
carries them as data files (pyproject.toml). An operator's
``render.template_dir`` is searched first, file by file, so overriding one part
(say ``_item.html.j2``) keeps the rest.

Jinja2 is configured strictly: autoescaping for ``.html.j2`` files,
``StrictUndefined`` (a misspelt variable is an error at ``paperpost check``,
not an empty string in a reader's inbox), and no access to anything but the
view objects passed in.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jinja2

from pipeline.errors import TemplateError

__all__ = ["REQUIRED_TEMPLATES", "SHIPPED_TEMPLATES", "TemplateSet", "shipped_templates"]

_CHECKOUT_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
_INSTALLED_TEMPLATES = Path(sys.prefix) / "share" / "paperpost" / "templates"


def shipped_templates(
    candidates: tuple[Path, ...] = (_CHECKOUT_TEMPLATES, _INSTALLED_TEMPLATES),
) -> Path:
    """The first of the checkout's and the installed template directories that exists
    (the checkout's when neither does, for the error message)."""
    return next((p for p in candidates if p.is_dir()), candidates[0])


SHIPPED_TEMPLATES = shipped_templates()
REQUIRED_TEMPLATES = (
    "digest.html.j2",
    "digest.txt.j2",
    "_item.html.j2",
    "_item.txt.j2",
    "subject.txt.j2",
    "digest.css",
)


class TemplateSet:
    """A Jinja2 environment over the operator's directory and the shipped one."""

    def __init__(self, template_dir: Path | None) -> None:
        search: list[Path] = []
        if template_dir is not None:
            if not template_dir.is_dir():
                raise TemplateError(
                    f"template directory {template_dir} does not exist; "
                    f"fix render.template_dir or remove it to use the shipped templates"
                )
            search.append(template_dir)
        if SHIPPED_TEMPLATES.is_dir():
            search.append(SHIPPED_TEMPLATES)
        elif template_dir is None:
            raise TemplateError(
                f"the shipped templates are missing: {SHIPPED_TEMPLATES} does not exist; "
                f"reinstall Paperpost (its wheel carries them) or set render.template_dir"
            )
        self.search_path = tuple(search)
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(p) for p in search]),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html.j2", "html"), default_for_string=True, default=False
            ),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self._cache: dict[str, jinja2.Template] = {}

    def set_global(self, name: str, value: object) -> None:
        """A name every template sees (the renderer's ``memo``)."""
        self._env.globals[name] = value

    def get(self, name: str) -> jinja2.Template:
        """The compiled template ``name``; ``TemplateError`` names the file and line if broken."""
        template = self._cache.get(name)
        if template is not None:
            return template
        try:
            template = self._env.get_template(name)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(
                f"template {name} not found in {', '.join(map(str, self.search_path))}"
            ) from exc
        except jinja2.TemplateSyntaxError as exc:
            where = exc.filename or name
            raise TemplateError(f"{where}:{exc.lineno}: {exc.message}") from exc
        self._cache[name] = template
        return template

    def source(self, name: str) -> str:
        """The raw text of a non-template file (the stylesheet)."""
        for directory in self.search_path:
            path = directory / name
            if path.is_file():
                try:
                    return path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise TemplateError(f"cannot read {path}: {exc}") from exc
        raise TemplateError(f"{name} not found in {', '.join(map(str, self.search_path))}")
