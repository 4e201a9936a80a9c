"""Rendering: a digest becomes a subject, an HTML body and a plain-text body.

``Renderer`` (Jinja2, CSS inlined with css-inline, per-paper fragment cache,
size cap) and ``RenderOptions``. Pure apart from reading the templates once.
"""

from __future__ import annotations

from pipeline.render.renderer import Renderer, RenderOptions
from pipeline.render.sample import sample_digest

__all__ = ["RenderOptions", "Renderer", "sample_digest"]
