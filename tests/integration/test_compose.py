"""Composing happens in the sender (``pipeline.cycle.compose``): the process pool of
``[mail] render_processes`` is retired, and a file that still asks for it is told what to do
instead (several ``paperpost worker`` processes, docs/scaling.md)."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.cycle.compose import Composer, make_composer
from pipeline.errors import ConfigError
from pipeline.store import Store


def test_render_processes_above_zero_names_the_replacement(write_config) -> None:
    path = write_config(mail_extra="render_processes = 2")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "mail.render_processes" in message
    assert "compose process pool was retired" in message
    assert "paperpost worker" in message


def test_an_old_file_with_render_processes_zero_still_loads(write_config) -> None:
    config = load_config(write_config(mail_extra="render_processes = 0"))
    store = Store.open(config.database_url)
    try:
        assert isinstance(make_composer(config, store), Composer)
    finally:
        store.close()
