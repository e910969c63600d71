"""Vector-codec benchmark: recall@10, RAM per vector and ms/query of every registered codec,
each next to an exact fp32 flat search (FAISS ``IndexFlatIP``) in the same run.

The vectors are real all-MiniLM-L6-v2 embeddings of ≈ 25k real English sentences (LoCoMo
dialogue turns plus prose installed on this machine: Python docstrings, package documentation,
``/usr/share/doc`` and man pages), with 1,000 of them held out as queries. Larger sets (100k,
1M) are semi-synthetic around that real distribution. BENCHMARKS.md describes the method.

    python benchmarks/codecs.py ../shared/data/locomo/locomo_dev.json
    python benchmarks/codecs.py --quick          # a small smoke run
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import ctypes
import gc
import gzip
import hashlib
import json
import multiprocessing
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from memos import codecs as memos_codecs
from memos.codecs import FaissTable, VectorCodec, make_codec
from memos.plaintext._vector_index import VectorIndex

HERE = Path(__file__).resolve().parent
DEFAULT_LOCOMO = HERE.parent.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
RESULTS_DIR = HERE / "results"
VENV_SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
SYSTEM_DIST = Path("/usr/lib/python3/dist-packages")
SHARE_DOC = Path("/usr/share/doc")
MAN_ROOT = Path("/usr/share/man")
MODEL = "all-MiniLM-L6-v2"
DIM = 384
CORPUS_VERSION = 1  # bump when the collection rules change, so the cached list is redone

Matrix = NDArray[np.float32]
console = Console(width=None if sys.stdout.isatty() else 160)


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    locomo: Path
    n_sentences: int
    n_queries: int
    sizes: tuple[str, ...]
    k: int
    queries_large: int
    large_from: int
    spread: tuple[float, float]
    ivf: bool
    ivf_lists: int
    ivf_train: int
    nprobes: tuple[int, ...]
    faiss_threads: int
    deep_rerank: int
    codecs: tuple[str, ...] | None
    seed: int
    recollect: bool
    quick: bool
    out_dir: Path


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description="MemOS vector-codec benchmark")
    parser.add_argument("locomo", nargs="?", type=Path, default=DEFAULT_LOCOMO)
    parser.add_argument("--sentences", type=int, default=25_000, help="real sentences in all")
    parser.add_argument("--queries", type=int, default=1_000, help="held-out query sentences")
    parser.add_argument(
        "--sizes", default="real,100000,1000000", help="set sizes; 'real' = the real set alone"
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--queries-large", type=int, default=300, help="queries run at sizes ≥ --large-from"
    )
    parser.add_argument("--large-from", type=int, default=500_000)
    parser.add_argument(
        "--spread",
        default="0.25,1.0",
        help="semi-synthetic perturbation scale range (× the real covariance's Cholesky factor)",
    )
    parser.add_argument("--no-ivf", action="store_true", help="skip the FAISS IVF reference")
    parser.add_argument("--ivf-lists", type=int, default=4096)
    parser.add_argument("--ivf-train", type=int, default=200_000, help="IVF training sample")
    parser.add_argument("--nprobes", default="16,32")
    parser.add_argument(
        "--faiss-threads",
        type=int,
        default=1,
        help="OpenMP threads FAISS searches with (a flat row at all cores is added for reference)",
    )
    parser.add_argument(
        "--deep-rerank",
        type=int,
        default=0,
        help="also time and score re-ranking this many candidates (0: off; VectorIndex uses "
        "max(4k, 40))",
    )
    parser.add_argument("--codecs", default=None, help="comma list (default: every registered)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recollect", action="store_true", help="rebuild the sentence list")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 3k sentences, sizes real,20000"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    low, high = (float(x) for x in args.spread.split(","))
    return Config(
        locomo=args.locomo,
        n_sentences=3_000 if quick else args.sentences,
        n_queries=200 if quick else args.queries,
        sizes=("real", "20000") if quick else tuple(args.sizes.split(",")),
        k=args.k,
        queries_large=args.queries_large,
        large_from=args.large_from,
        spread=(low, high),
        ivf=not args.no_ivf,
        ivf_lists=256 if quick else args.ivf_lists,
        ivf_train=args.ivf_train,
        nprobes=tuple(int(x) for x in args.nprobes.split(",")),
        faiss_threads=args.faiss_threads,
        deep_rerank=args.deep_rerank,
        codecs=tuple(args.codecs.split(",")) if args.codecs else None,
        seed=args.seed,
        recollect=args.recollect,
        quick=quick,
        out_dir=args.out_dir,
    )


# -- the real sentences -----------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z\"'(])")
_CODE_MARKS = (">>>", "::", "{", "}", "==", "\\", "http", "|", "->", "www.", "@", "$", "<", ">")
_MIN_WORDS, _MAX_WORDS = 5, 60


@dataclass
class Corpus:
    sentences: list[str]
    sources: list[str]
    pool_sizes: dict[str, int]
    files_read: dict[str, int]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for source in self.sources:
            out[source] = out.get(source, 0) + 1
        return out


def _stable_sample(paths: Iterable[Path], one_in: int) -> list[Path]:
    """Every ``one_in``-th file by a hash of its path: spread over all packages, reproducible."""
    chosen = []
    for path in sorted(paths):
        digest = hashlib.sha1(str(path).encode(), usedforsecurity=False).digest()
        if int.from_bytes(digest[:4], "big") % one_in == 0:
            chosen.append(path)
    return chosen


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph of prose, whitespace collapsed."""
    flat = " ".join(text.split())
    return [part.strip() for part in _SENTENCE_END.split(flat) if part.strip()]


def is_prose(sentence: str) -> bool:
    """A real English sentence of 5–60 words, not code, a table or a list of names."""
    words = sentence.split()
    if not _MIN_WORDS <= len(words) <= _MAX_WORDS:
        return False
    if not sentence[0].isupper() or sentence[-1] not in ".!?":
        return False
    if any(mark in sentence for mark in _CODE_MARKS):
        return False
    visible = [c for c in sentence if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    if letters < 0.8 * len(visible) or not sentence.isascii():
        return False
    # Identifiers (snake_case, dotted.names, CamelCase) mark API text rather than prose.
    codey = sum("_" in w or "." in w.rstrip(".,;:") or w[1:] != w[1:].lower() for w in words)
    return codey <= len(words) // 5


def prose_sentences(paragraphs: Iterable[str]) -> Iterator[str]:
    for paragraph in paragraphs:
        yield from (s for s in split_sentences(paragraph) if is_prose(s))


def paragraphs_of(text: str) -> list[str]:
    """Blank-line separated blocks, dropping indented (code) and heading-like lines."""
    blocks: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        code_like = line.startswith(("    ", "\t")) or stripped.startswith(("#", "..", "=", "-"))
        if not stripped or code_like:
            if current:
                blocks.append(" ".join(current))
            current = []
            continue
        current.append(stripped.lstrip("*+ "))
    if current:
        blocks.append(" ".join(current))
    return blocks


_MARKUP = [
    (re.compile(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`"), r"\1"),  # rst roles
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),  # markdown links and images
    (re.compile(r"`+([^`]*)`+_?"), r"\1"),
    (re.compile(r"\*\*([^*]*)\*\*|__([^_]*)__"), r"\1\2"),
    (re.compile(r"(?<!\w)\*([^*\s][^*]*)\*(?!\w)"), r"\1"),
]


def strip_markup(text: str) -> str:
    for pattern, replacement in _MARKUP:
        text = pattern.sub(replacement, text)
    return text


def locomo_turns(path: Path) -> list[str]:
    conversations = json.loads(path.read_text(encoding="utf-8"))
    turns: list[str] = []
    for sample in conversations:
        conversation = sample["conversation"]
        for key, value in conversation.items():
            if key.startswith("session_") and isinstance(value, list):
                turns.extend(str(turn["text"]).strip() for turn in value if turn.get("text"))
    return turns


def docstring_sentences(files: Sequence[Path]) -> Iterator[str]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            doc = ast.get_docstring(node) if isinstance(node, kinds) else None
            if doc:
                yield from prose_sentences(paragraphs_of(strip_markup(doc)))


def text_file_sentences(files: Sequence[Path]) -> Iterator[str]:
    for path in files:
        try:
            raw = path.read_bytes()
            if path.suffix == ".gz":
                raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        text = raw.decode("utf-8", errors="replace")
        yield from prose_sentences(paragraphs_of(strip_markup(text)))


_ROFF_FONT_MACROS = (".B ", ".I ", ".BR ", ".RB ", ".IR ", ".RI ", ".BI ", ".IB ", ".SM ")
_ROFF_BREAKS = (".PP", ".P", ".LP", ".SH", ".SS", ".TP", ".IP", ".HP", ".sp", ".br", ".TH")
_ROFF_ESCAPES = [
    (re.compile(r"\\f(\(..|\[[^\]]*\]|.)"), ""),
    (re.compile(r"\\\((em|en)"), " - "),
    (re.compile(r"\\\((lq|rq|dq)"), '"'),
    (re.compile(r"\\\((aq|oq|cq)"), "'"),
    (re.compile(r"\\\(..|\\\[[^\]]*\]|\\\*(\(..|\[[^\]]*\]|.)"), ""),
    (re.compile(r"\\s[-+]?\d"), ""),
    (re.compile(r"\\[-e]"), "-"),
    (re.compile(r"\\[&|^0 ~:,/c]"), ""),
]


def roff_paragraphs(source: str) -> list[str]:
    """Prose paragraphs of a man(7) page; mdoc pages and ``.so`` redirects give nothing."""
    if source.lstrip().startswith((".so ", ".Dd")) or "\n.Dd " in source[:2000]:
        return []
    blocks: list[str] = []
    current: list[str] = []
    in_display = False
    for line in source.splitlines():
        line = line.split('\\"', 1)[0]
        if line.startswith((".nf", ".EX")):
            in_display = True
        elif line.startswith((".fi", ".EE")):
            in_display = False
        if in_display:
            continue
        if line.startswith(_ROFF_FONT_MACROS):
            line = line.split(" ", 1)[1].replace('"', "")
        elif line.startswith((".", "'")):
            if line.startswith(_ROFF_BREAKS) and current:
                blocks.append(" ".join(current))
                current = []
            continue
        for pattern, replacement in _ROFF_ESCAPES:
            line = pattern.sub(replacement, line)
        if line.strip():
            current.append(line.strip())
    if current:
        blocks.append(" ".join(current))
    return blocks


def man_page_sentences(files: Sequence[Path]) -> Iterator[str]:
    for path in files:
        try:
            source = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        yield from prose_sentences(roff_paragraphs(source))


def _package_doc_files() -> list[Path]:
    roots = [VENV_SITE / "site-packages", SYSTEM_DIST]
    files: list[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        files.extend(root.glob("*.dist-info/METADATA"))
        files.extend(root.glob("*.egg-info/PKG-INFO"))
        for suffix in ("*.rst", "*.md", "*.txt"):
            files.extend(
                p
                for p in root.rglob(suffix)
                if "LICENSE" not in p.name.upper()
                and p.name not in {"RECORD", "top_level.txt", "entry_points.txt"}
                and not p.name.endswith(("requires.txt", "SOURCES.txt", "dependency_links.txt"))
            )
    return sorted(set(files))


def _share_doc_files() -> list[Path]:
    wanted = re.compile(r"^(README|NEWS|FAQ|TODO|AUTHORS|USAGE|.*\.(md|txt|rst))", re.IGNORECASE)
    files = [
        p
        for p in SHARE_DOC.rglob("*")
        if p.is_file()
        and wanted.match(p.name)
        and "copyright" not in p.name.lower()
        and "changelog" not in p.name.lower()
    ]
    return sorted(files)


def _man_files() -> list[Path]:
    files: list[Path] = []
    for section in ("man1", "man5", "man7", "man8"):
        files.extend((MAN_ROOT / section).glob("*.gz"))
    return sorted(files)


def _python_files(root: Path, *, exclude: tuple[str, ...] = ()) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in root.rglob("*.py") if not any(part in exclude for part in p.parts)]


def gather_pools() -> tuple[dict[str, list[str]], dict[str, int]]:
    """Candidate prose sentences by source (not yet deduplicated across sources), and how
    many files each source read. Large sources are read from a stable sample of files."""
    stdlib = _python_files(STDLIB, exclude=("test", "tests", "idlelib", "site-packages"))
    site = _python_files(VENV_SITE / "site-packages", exclude=("tests", "test"))
    readers: dict[str, tuple[list[Path], Callable[[Sequence[Path]], Iterator[str]]]] = {
        "python stdlib docstrings": (stdlib, docstring_sentences),
        "venv package docstrings": (_stable_sample(site, 6), docstring_sentences),
        "package docs (METADATA/rst/md/txt)": (_package_doc_files(), text_file_sentences),
        "/usr/share/doc text": (_share_doc_files(), text_file_sentences),
        "man pages (man1/5/7/8)": (_stable_sample(_man_files(), 3), man_page_sentences),
    }
    pools: dict[str, list[str]] = {}
    files_read: dict[str, int] = {}
    for source, (files, reader) in readers.items():
        started = time.perf_counter()
        pools[source] = list(reader(files))
        files_read[source] = len(files)
        console.print(
            f"  {source}: {len(files):,} files → {len(pools[source]):,} sentences "
            f"({time.perf_counter() - started:.0f} s)"
        )
    return pools, files_read


def _normal_form(sentence: str) -> str:
    return " ".join(sentence.lower().split())


def select_sentences(
    turns: Sequence[str], pools: Mapping[str, list[str]], total: int, seed: int
) -> tuple[list[str], list[str], dict[str, int]]:
    """Every distinct LoCoMo turn, then an equal share of the rest from each prose source
    (a smaller source gives all it has and the others share what it leaves)."""
    seen: set[str] = set()
    chosen: list[tuple[str, str]] = []

    def distinct(items: Iterable[str]) -> list[str]:
        out = []
        for item in items:
            key = _normal_form(item)
            if key not in seen:
                seen.add(key)
                out.append(item)
        return out

    chosen.extend(("LoCoMo dialogue turns", t) for t in distinct(turns))
    rng = random.Random(seed)
    deduped = {}
    for source, sentences in pools.items():
        unique = distinct(sentences)
        rng.shuffle(unique)
        deduped[source] = unique
    pool_sizes = {"LoCoMo dialogue turns": len(chosen)} | {s: len(v) for s, v in deduped.items()}
    remaining = total - len(chosen)
    for n_left, source in enumerate(sorted(deduped, key=lambda s: len(deduped[s])), start=0):
        share = remaining // (len(deduped) - n_left)
        picked = deduped[source][:share]
        chosen.extend((source, s) for s in picked)
        remaining -= len(picked)
    return [s for _, s in chosen], [src for src, _ in chosen], pool_sizes


def collect_corpus(config: Config) -> Corpus:
    key = hashlib.sha256(
        json.dumps([CORPUS_VERSION, config.n_sentences, config.seed]).encode()
    ).hexdigest()[:12]
    cache = config.out_dir / f"codecs-sentences-{key}.json"
    if cache.exists() and not config.recollect:
        data = json.loads(cache.read_text(encoding="utf-8"))
        console.print(f"sentence list: {cache.name} (cached; --recollect rebuilds it)")
        return Corpus(**data)
    console.print("collecting real sentences:")
    turns = locomo_turns(config.locomo)
    pools, files_read = gather_pools()
    files_read = {"LoCoMo dialogue turns": 1} | files_read
    sentences, sources, pool_sizes = select_sentences(turns, pools, config.n_sentences, config.seed)
    corpus = Corpus(sentences, sources, pool_sizes, files_read)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(asdict(corpus)), encoding="utf-8")
    return corpus


# -- embeddings -------------------------------------------------------------------------------


def _embed_worker(sentences: list[str], path: str) -> None:
    """Runs in a child process, so torch (and its OpenMP pool) never enters the process
    that times FAISS and the codecs."""
    from memos import MiniLMEmbedder

    vectors = MiniLMEmbedder().embed(sentences)
    np.save(path, vectors.astype(np.float32))


def embed_cached(sentences: list[str], out_dir: Path) -> tuple[Matrix, float | None]:
    """MiniLM vectors of ``sentences``, from a cache keyed by the sentence list's hash;
    also the seconds spent embedding, ``None`` when cached."""
    digest = hashlib.sha256("\n".join([MODEL, *sentences]).encode()).hexdigest()[:16]
    path = out_dir / f"codecs-embeddings-{digest}.npy"
    if path.exists():
        console.print(f"embeddings: {path.name} (cached)")
        return np.load(path), None
    console.print(f"embedding {len(sentences):,} sentences with {MODEL} (a few minutes)…")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_embed_worker, args=(sentences, str(path) + ".tmp.npy"))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"embedding failed (exit code {process.exitcode})")
    os.replace(str(path) + ".tmp.npy", path)
    seconds = time.perf_counter() - started
    console.print(f"  {len(sentences) / seconds:.0f} sentences/s, {seconds:.0f} s")
    return np.load(path), seconds


def split_queries(vectors: Matrix, n_queries: int, seed: int) -> tuple[NDArray[np.int64], ...]:
    """Row numbers of the base set and of the held-out queries (a random sample of all)."""
    order = np.random.default_rng(seed).permutation(len(vectors))
    return np.sort(order[n_queries:]), order[:n_queries]


# -- vector sets ------------------------------------------------------------------------------


def size_of(label: str, n_real: int) -> int:
    return n_real if label == "real" else int(label)


def perturbation_factor(real: Matrix) -> NDArray[np.float64]:
    """``L`` with ``L Lᵀ`` = the real vectors' covariance: noise drawn through it follows the
    real distribution's own spectrum (isotropic noise would not; see MEASUREMENTS.md)."""
    covariance = np.cov(real.astype(np.float64), rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    variances: NDArray[np.float64] = np.asarray(eigenvalues, dtype=np.float64)
    # A covariance's eigenvalues are ≥ 0; rounding leaves tiny negative ones (≈ -1e-19 here).
    spread = np.sqrt(np.maximum(variances, np.zeros_like(variances)))
    factor: NDArray[np.float64] = np.asarray(eigenvectors, dtype=np.float64) * spread
    return factor


def build_set(
    real: Matrix, n: int, spread: tuple[float, float], seed: int, path: Path
) -> NDArray[np.float32]:
    """``n`` unit vectors in a memory-mapped file: the real base vectors, then semi-synthetic
    ones, each a random real vector plus ``s · L z`` (``z`` standard normal, ``s`` uniform in
    ``spread``), re-normalised. The file stands for the full-precision copy on disk."""
    matrix = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, real.shape[1]))
    matrix[: len(real)] = real[:n]
    if n > len(real):
        factor = perturbation_factor(real)
        rng = np.random.default_rng(seed)
        for start in range(len(real), n, 100_000):
            stop = min(start + 100_000, n)
            parents = real[rng.integers(0, len(real), stop - start)].astype(np.float64)
            scale = rng.uniform(*spread, size=(stop - start, 1))
            noise = rng.standard_normal((stop - start, real.shape[1])) @ factor.T
            chunk = parents + scale * noise
            chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
            matrix[start:stop] = chunk.astype(np.float32)
    matrix.flush()
    return matrix


def flat_index(base: NDArray[np.float32]) -> Any:
    index = faiss.IndexFlatIP(base.shape[1])
    for start in range(0, len(base), 100_000):
        index.add(np.ascontiguousarray(base[start : start + 100_000]))
    return index


# -- codecs -----------------------------------------------------------------------------------

# The members of each parameterised family the benchmark runs: for PCA, the PCA-192,
# exactly 8× smaller than fp32 (188 dims + a 4-byte scale) and ≈ 12×; for IVF, list counts
# that can be fitted at 100k (1024) and the 1M reference (4096).
FAMILY_MEMBERS: dict[str, tuple[int, ...]] = {
    "pca{k}+fp8": (192, 188, 128),
    "ivf{nlist}+sq8": (1024, 4096),
    "ivf{nlist}+fp16": (1024,),
}
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


def registered_codecs() -> tuple[list[str], list[str]]:
    """Every codec name the registry knows, and its parameterised families. The registry has
    no public listing, so this reads its tables (and fails loudly if they move)."""
    names = sorted(getattr(memos_codecs, "_CODECS"))  # noqa: B009
    families = list(getattr(memos_codecs, "_FAMILY_NAMES", ()))
    return names, families


def codec_names(config: Config) -> list[str]:
    if config.codecs is not None:
        return list(config.codecs)
    names, families = registered_codecs()
    expanded = list(names)
    for family in families:
        members = FAMILY_MEMBERS.get(family)
        if members is None:
            console.print(f"[yellow]codec family {family!r} has no members chosen: not run")
            continue
        expanded.extend(_PLACEHOLDER.sub(str(member), family) for member in members)
    return expanded


def fit_sample_rows(codec: VectorCodec) -> int:
    """How many vectors a cube fits ``codec`` on (the registry says, where it can)."""
    size_of_sample = getattr(memos_codecs, "fit_sample_size", None)
    if size_of_sample is not None:
        return int(size_of_sample(codec))
    return int(getattr(memos_codecs, "FIT_SAMPLE_MAX", 50_000))


def fitted_codec(name: str, base: NDArray[np.float32], seed: int) -> tuple[VectorCodec, float]:
    """The codec, fitted as a cube would fit it (on a random sample of its vectors, as many
    as the registry says) when it needs fitting; also the seconds the fit took."""
    codec = make_codec(name)
    if codec.fitted:
        return codec, 0.0
    sample_max = fit_sample_rows(codec)
    rows = np.random.default_rng(seed).choice(len(base), min(sample_max, len(base)), False)
    sample = np.ascontiguousarray(base[np.sort(rows)])
    started = time.perf_counter()
    state = codec.fit(sample)
    seconds = time.perf_counter() - started
    return make_codec(name, state), seconds


def rss_bytes() -> int:
    """Resident set size, after returning freed heap pages to the system (glibc keeps them
    otherwise, and a later table would reuse them without the RSS growing)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_index(
    codec: VectorCodec, base: NDArray[np.float32], ids: Sequence[str], chunk: int
) -> tuple[VectorIndex, float, int]:
    """A VectorIndex filled as ``add_many`` fills one (upserts of ``chunk`` vectors); the
    seconds it took and the process's RSS growth (codes plus id bookkeeping)."""
    before = rss_bytes()
    started = time.perf_counter()
    index = VectorIndex(codec, base.shape[1])
    for start in range(0, len(base), chunk):
        index.upsert(ids[start : start + chunk], np.asarray(base[start : start + chunk]))
    return index, time.perf_counter() - started, rss_bytes() - before


class _IdsOnly:
    """A code table that holds nothing: measures the RSS of VectorIndex's id bookkeeping."""

    def __init__(self) -> None:
        self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        return 0

    def add(self, vectors: NDArray[np.float32]) -> None:
        self._n += len(vectors)

    def remove(self, positions: NDArray[np.int64]) -> None:
        self._n -= len(positions)

    def search(
        self, query: NDArray[np.float32], k: int, allowed: NDArray[np.int64] | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        # it holds no codes, so nothing is ever found
        return np.zeros(0, np.float32), np.zeros(0, np.int64)

    def save(self, path: Path) -> None:
        path.write_bytes(b"")


def ids_rss(n: int, ids: Sequence[str], chunk: int) -> int:
    codec = make_codec("fp32")
    before = rss_bytes()
    index = VectorIndex(codec, DIM, table=_IdsOnly())
    for start in range(0, n, chunk):
        index.upsert(ids[start : start + chunk], np.zeros((min(chunk, n - start), DIM), "f4"))
    grown = rss_bytes() - before
    del index
    return grown


@dataclass(frozen=True)
class _Reference:
    """Stands in for a codec so a FAISS IVF index can be searched (and re-ranked) through
    VectorIndex exactly like a codec's table."""

    name: str
    exact: bool = False


# -- timing -----------------------------------------------------------------------------------

Search = Callable[[NDArray[np.float32]], Any]


@dataclass
class PathResult:
    times_ms: list[float] = field(default_factory=list)
    found: list[NDArray[np.int64]] = field(default_factory=list)

    def p50(self) -> float:
        return statistics.median(self.times_ms)

    def mean(self) -> float:
        return statistics.fmean(self.times_ms)


def time_paths(
    paths: Mapping[str, tuple[Search, Callable[[Any], NDArray[np.int64]]]],
    queries: NDArray[np.float32],
    threads: int,
) -> dict[str, PathResult]:
    """Each query through every path, one query at a time, the order of the paths rotating
    from query to query so drift on the machine falls on all of them alike."""
    names = list(paths)
    results = {name: PathResult() for name in names}
    with search_threads(threads):
        for number, query in enumerate(queries):
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                search, positions = paths[name]
                started = time.perf_counter()
                answer = search(query)
                results[name].times_ms.append((time.perf_counter() - started) * 1e3)
                results[name].found.append(positions(answer))
    return results


@contextlib.contextmanager
def search_threads(threads: int) -> Iterator[None]:
    """FAISS searches at the benchmark's thread count; everything else (building, training,
    the batched ground truth) at all cores."""
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(os.cpu_count() or 1)


def recall_at(found: Sequence[NDArray[np.int64]], truth: NDArray[np.int64], k: int) -> float:
    hits = sum(len(np.intersect1d(f[:k], t[:k])) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(found))


def flat_search(index: Any, k: int) -> Search:
    def search(query: NDArray[np.float32]) -> Any:
        return index.search(query.reshape(1, -1), k)[1][0]

    return search


def index_search(index: VectorIndex, k: int, base: NDArray[np.float32] | None) -> Search:
    """``VectorIndex.search`` as MemOS calls it: with ``base`` (the full-precision vectors on
    disk) a lossy codec's candidates are re-ranked exactly; without, the codec's own ranking."""

    def exact(ids: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        assert base is not None
        return {item_id: np.asarray(base[int(item_id)]) for item_id in ids}

    def search(query: NDArray[np.float32]) -> Any:
        return index.search(query, k, exact=exact if base is not None else None)

    return search


def deep_search(index: VectorIndex, k: int, depth: int, base: NDArray[np.float32]) -> Search:
    """The codec's top ``depth`` candidates re-scored exactly, as VectorIndex would with a
    deeper re-rank: what a larger RERANK_FACTOR/RERANK_MIN would buy."""

    def search(query: NDArray[np.float32]) -> Any:
        found = np.asarray([int(i) for i, _ in index.search(query, depth)], dtype=np.int64)
        exact = np.asarray(base[np.sort(found)]) @ query
        return np.sort(found)[np.argsort(-exact, kind="stable")[:k]]

    return search


def _as_positions(answer: Any) -> NDArray[np.int64]:
    return np.asarray(answer, dtype=np.int64)


def _ids_as_positions(answer: Any) -> NDArray[np.int64]:
    return np.asarray([int(item_id) for item_id, _ in answer], dtype=np.int64)


# -- measurement ------------------------------------------------------------------------------

FP32_BYTES = 4 * DIM


@dataclass
class Row:
    size: str
    n: int
    method: str
    kind: str  # "baseline", "codec" or "reference"
    queries: int
    bytes_per_vector: float
    nominal_bytes_per_vector: float | None
    rss_bytes_per_vector: float | None
    recall_raw: float
    recall_rerank: float | None
    raw_ms_p50: float | None
    raw_ms_mean: float | None
    ms_p50: float
    ms_mean: float
    flat_ms_p50: float
    flat_ms_mean: float
    flat_recall: float = 1.0
    deep_candidates: int | None = None
    recall_deep: float | None = None
    deep_ms_p50: float | None = None
    deep_ms_mean: float | None = None
    fit_s: float | None = None
    build_s: float | None = None
    note: str = ""

    @property
    def smaller(self) -> float:
        return FP32_BYTES / self.bytes_per_vector

    @property
    def vs_flat(self) -> float:
        return self.ms_p50 / self.flat_ms_p50


@dataclass
class SizeContext:
    label: str
    base: NDArray[np.float32]
    queries: NDArray[np.float32]
    truth: NDArray[np.int64]
    flat: Any
    ids: list[str]
    k: int
    chunk: int
    seed: int
    threads: int
    deep_rerank: int = 0

    @property
    def n(self) -> int:
        return len(self.base)


def measure_codec(ctx: SizeContext, name: str) -> Row:
    codec, fit_s = fitted_codec(name, ctx.base, ctx.seed)
    index, build_s, grown = build_index(codec, ctx.base, ctx.ids, ctx.chunk)
    flat = (flat_search(ctx.flat, ctx.k), _as_positions)
    paths = {"flat": flat, "full": (index_search(index, ctx.k, ctx.base), _ids_as_positions)}
    if not codec.exact:
        paths["raw"] = (index_search(index, ctx.k, None), _ids_as_positions)
    deep = ctx.deep_rerank if not codec.exact else 0
    if deep:
        paths["deep"] = (deep_search(index, ctx.k, deep, ctx.base), _as_positions)
    timed = time_paths(paths, ctx.queries, ctx.threads)
    raw = timed.get("raw", timed["full"])
    row = Row(
        size=ctx.label,
        n=ctx.n,
        method=name,
        kind="codec",
        queries=len(ctx.queries),
        bytes_per_vector=index.nbytes / ctx.n,
        nominal_bytes_per_vector=codec.bytes_per_vector(DIM),
        rss_bytes_per_vector=grown / ctx.n,
        recall_raw=recall_at(raw.found, ctx.truth, ctx.k),
        recall_rerank=None if codec.exact else recall_at(timed["full"].found, ctx.truth, ctx.k),
        raw_ms_p50=raw.p50(),
        raw_ms_mean=raw.mean(),
        ms_p50=timed["full"].p50(),
        ms_mean=timed["full"].mean(),
        flat_ms_p50=timed["flat"].p50(),
        flat_ms_mean=timed["flat"].mean(),
        flat_recall=recall_at(timed["flat"].found, ctx.truth, ctx.k),
        fit_s=fit_s if fit_s else None,
        build_s=build_s,
        note="exact: no re-rank" if codec.exact else _table_settings(index),
    )
    if deep:
        row.deep_candidates = deep
        row.recall_deep = recall_at(timed["deep"].found, ctx.truth, ctx.k)
        row.deep_ms_p50 = timed["deep"].p50()
        row.deep_ms_mean = timed["deep"].mean()
    return row


def _table_settings(index: VectorIndex) -> str:
    """Search settings a table carries (an IVF table's nprobe), recorded with its figures."""
    table = getattr(index, "_table", None)
    nprobe, nlist = getattr(table, "nprobe", None), getattr(table, "nlist", None)
    if nprobe is None or nlist is None:
        return ""
    return f"scans {min(nprobe, nlist)} of {nlist} lists (nprobe {nprobe})"


def measure_ivf(ctx: SizeContext, lists: int, train_max: int, nprobes: Sequence[int]) -> list[Row]:
    """FAISS IVF{lists},SQ8 (inner product) as the partitioned-index reference, searched and
    re-ranked through VectorIndex like a codec's table."""
    rows = np.random.default_rng(ctx.seed).choice(ctx.n, min(train_max, ctx.n), replace=False)
    sample = np.ascontiguousarray(ctx.base[np.sort(rows)])
    ivf: Any = faiss.index_factory(DIM, f"IVF{lists},SQ8", faiss.METRIC_INNER_PRODUCT)
    started = time.perf_counter()
    ivf.train(sample)
    train_s = time.perf_counter() - started
    del sample
    reference = _Reference(f"IVF{lists},SQ8")
    before = rss_bytes()
    started = time.perf_counter()
    index = VectorIndex(reference, DIM, table=FaissTable(ivf))  # type: ignore[arg-type]
    for start in range(0, ctx.n, ctx.chunk):
        index.upsert(
            ctx.ids[start : start + ctx.chunk], np.asarray(ctx.base[start : start + ctx.chunk])
        )
    build_s = time.perf_counter() - started
    grown = rss_bytes() - before
    stored = len(faiss.serialize_index(ivf))

    def probing(search: Search, nprobe: int) -> Search:
        def run(query: NDArray[np.float32]) -> Any:
            ivf.nprobe = nprobe
            return search(query)

        return run

    paths: dict[str, tuple[Search, Callable[[Any], NDArray[np.int64]]]] = {
        "flat": (flat_search(ctx.flat, ctx.k), _as_positions)
    }
    for nprobe in nprobes:
        paths[f"raw{nprobe}"] = (
            probing(index_search(index, ctx.k, None), nprobe),
            _ids_as_positions,
        )
        paths[f"full{nprobe}"] = (
            probing(index_search(index, ctx.k, ctx.base), nprobe),
            _ids_as_positions,
        )
    timed = time_paths(paths, ctx.queries, ctx.threads)
    out = []
    for nprobe in nprobes:
        raw, full = timed[f"raw{nprobe}"], timed[f"full{nprobe}"]
        out.append(
            Row(
                size=ctx.label,
                n=ctx.n,
                method=f"faiss IVF{lists},SQ8 np{nprobe}",
                kind="reference",
                queries=len(ctx.queries),
                bytes_per_vector=stored / ctx.n,
                nominal_bytes_per_vector=None,
                rss_bytes_per_vector=grown / ctx.n,
                recall_raw=recall_at(raw.found, ctx.truth, ctx.k),
                recall_rerank=recall_at(full.found, ctx.truth, ctx.k),
                raw_ms_p50=raw.p50(),
                raw_ms_mean=raw.mean(),
                ms_p50=full.p50(),
                ms_mean=full.mean(),
                flat_ms_p50=timed["flat"].p50(),
                flat_ms_mean=timed["flat"].mean(),
                flat_recall=recall_at(timed["flat"].found, ctx.truth, ctx.k),
                fit_s=train_s,
                build_s=build_s,
                note=f"trained on {len(rows):,} vectors in {train_s:.0f} s; B/vec = serialized "
                "index (codes + 8-byte ids + centroids)",
            )
        )
    return out


def measure_flat_threads(ctx: SizeContext, threads: int, limit: int) -> Row:
    """Flat search with FAISS's OpenMP pool at ``threads``, beside the flat search at the
    benchmark's thread count: on a shared 2-core machine a single-query search that waits
    at OpenMP barriers for a descheduled thread can be many times slower."""

    def threaded(query: NDArray[np.float32]) -> Any:
        faiss.omp_set_num_threads(threads)
        try:
            return ctx.flat.search(query.reshape(1, -1), ctx.k)[1][0]
        finally:
            faiss.omp_set_num_threads(ctx.threads)

    queries = ctx.queries[:limit]
    timed = time_paths(
        {
            "flat": (flat_search(ctx.flat, ctx.k), _as_positions),
            "threaded": (threaded, _as_positions),
        },
        queries,
        ctx.threads,
    )
    return Row(
        size=ctx.label,
        n=ctx.n,
        method=f"faiss Flat, {threads} OpenMP threads",
        kind="threads",
        queries=len(queries),
        bytes_per_vector=ctx.flat.code_size,
        nominal_bytes_per_vector=float(FP32_BYTES),
        rss_bytes_per_vector=None,
        recall_raw=recall_at(timed["threaded"].found, ctx.truth[:limit], ctx.k),
        recall_rerank=None,
        raw_ms_p50=None,
        raw_ms_mean=None,
        ms_p50=timed["threaded"].p50(),
        ms_mean=timed["threaded"].mean(),
        flat_ms_p50=timed["flat"].p50(),
        flat_ms_mean=timed["flat"].mean(),
        flat_recall=recall_at(timed["flat"].found, ctx.truth[:limit], ctx.k),
        note=f"reference only: the other rows search with {ctx.threads} FAISS thread(s)",
    )


def flat_row(ctx: SizeContext, blocks: Sequence[Row], build_s: float) -> Row:
    """The exact baseline, timed in every block beside each codec: p50 is the median of the
    blocks' p50s, mean the mean of their means; its recall (the worst block's) must be 1.0."""
    return Row(
        size=ctx.label,
        n=ctx.n,
        method="faiss Flat (exact fp32)",
        kind="baseline",
        queries=len(ctx.queries),
        bytes_per_vector=ctx.flat.code_size * ctx.flat.ntotal / ctx.n,
        nominal_bytes_per_vector=float(FP32_BYTES),
        rss_bytes_per_vector=None,
        recall_raw=min(r.flat_recall for r in blocks),
        recall_rerank=None,
        raw_ms_p50=None,
        raw_ms_mean=None,
        ms_p50=statistics.median(r.flat_ms_p50 for r in blocks),
        ms_mean=statistics.fmean(r.flat_ms_mean for r in blocks),
        flat_ms_p50=statistics.median(r.flat_ms_p50 for r in blocks),
        flat_ms_mean=statistics.fmean(r.flat_ms_mean for r in blocks),
        build_s=build_s,
        note=f"timed in each of {len(blocks)} blocks",
    )


@dataclass
class SizeResult:
    label: str
    n: int
    semi_synthetic: bool
    queries: int
    build_set_s: float
    flat_build_s: float
    ids_rss_bytes_per_vector: float
    top1_score_mean: float
    top10_score_mean: float
    rows: list[Row]
    skipped: dict[str, str] = field(default_factory=dict)


def measure_size(
    config: Config, label: str, real_base: Matrix, queries: Matrix, names: Sequence[str], ivf: bool
) -> SizeResult:
    n = size_of(label, len(real_base))
    n_queries = config.queries_large if n >= config.large_from else len(queries)
    console.rule(f"{n:,} vectors" + (" (real)" if n <= len(real_base) else " (semi-synthetic)"))
    with tempfile.TemporaryDirectory(prefix="memos-codecs-") as workdir:
        started = time.perf_counter()
        base = build_set(real_base, n, config.spread, config.seed + n, Path(workdir) / "set.npy")
        build_set_s = time.perf_counter() - started
        started = time.perf_counter()
        flat = flat_index(base)
        flat_build_s = time.perf_counter() - started
        scores, truth = flat.search(np.ascontiguousarray(queries[:n_queries]), config.k)
        ids = [str(i) for i in range(n)]
        chunk = 10_000
        ctx = SizeContext(
            label=label,
            base=base,
            queries=queries[:n_queries],
            truth=truth,
            flat=flat,
            ids=ids,
            k=config.k,
            chunk=chunk,
            seed=config.seed,
            threads=config.faiss_threads,
            deep_rerank=config.deep_rerank,
        )
        bookkeeping = ids_rss(n, ids, chunk)
        rows: list[Row] = []
        skipped: dict[str, str] = {}
        for name in names:
            fit_min = make_codec(name).fit_min
            if fit_min > n:
                skipped[name] = f"needs ≥ {fit_min:,} vectors to fit (below that a cube keeps fp32)"
                console.print(f"  {name}: not run at {n:,}: {skipped[name]}")
                continue
            started = time.perf_counter()
            rows.append(measure_codec(ctx, name))
            gc.collect()
            console.print(f"  {name}: {time.perf_counter() - started:.0f} s")
        if ivf:
            started = time.perf_counter()
            rows.extend(measure_ivf(ctx, config.ivf_lists, config.ivf_train, config.nprobes))
            gc.collect()
            console.print(f"  IVF reference: {time.perf_counter() - started:.0f} s")
        rows.insert(0, flat_row(ctx, rows, flat_build_s))
        threads = os.cpu_count() or 1
        if threads != config.faiss_threads:
            limit = 100 if n >= config.large_from else 200
            rows.insert(1, measure_flat_threads(ctx, threads, limit))
        del ctx, flat, base
    return SizeResult(
        label=label,
        n=n,
        semi_synthetic=n > len(real_base),
        queries=n_queries,
        build_set_s=build_set_s,
        flat_build_s=flat_build_s,
        ids_rss_bytes_per_vector=bookkeeping / n,
        top1_score_mean=float(scores[:, 0].mean()),
        top10_score_mean=float(scores[:, -1].mean()),
        rows=rows,
        skipped=skipped,
    )


# -- the goal and the pick --------------------------------------------------------------------

GOAL_SMALLER = 8.0
GOAL_RECALL = 0.99


@dataclass
class Verdict:
    codec: str
    smaller: float
    recall_rerank_min: float
    slower_at: list[str]
    unmeasured_at: list[str]
    meets_goal: bool


def verdicts(results: Sequence[SizeResult], sizes_for_speed: Sequence[str]) -> list[Verdict]:
    """Per codec: smallest compression and worst re-ranked recall over every size it ran at,
    the goal sizes (100k, 1M) where its p50 or mean (re-rank included) exceeded flat's in its
    block, and the goal sizes it did not run at (a codec not yet fittable there)."""
    out = []
    names = list(dict.fromkeys(r.method for res in results for r in res.rows if r.kind == "codec"))
    for name in names:
        rows = [r for res in results for r in res.rows if r.method == name]
        smaller = min(r.smaller for r in rows)
        recall = min(r.recall_rerank if r.recall_rerank is not None else r.recall_raw for r in rows)
        slower = [
            r.size
            for r in rows
            if r.size in sizes_for_speed
            and (r.ms_p50 > r.flat_ms_p50 or r.ms_mean > r.flat_ms_mean)
        ]
        unmeasured = [size for size in sizes_for_speed if size not in {r.size for r in rows}]
        meets = smaller >= GOAL_SMALLER and recall >= GOAL_RECALL and not slower and not unmeasured
        out.append(Verdict(name, smaller, recall, slower, unmeasured, meets))
    return out


def pick_default(found: Sequence[Verdict]) -> Verdict | None:
    """The smallest codec that keeps recall@10 ≥ 0.99 after re-rank at every size and is not
    slower than flat at any goal size (whether or not it reaches 8×); ties go to higher
    recall."""
    fit = [
        v
        for v in found
        if v.recall_rerank_min >= GOAL_RECALL and not v.slower_at and not v.unmeasured_at
    ]
    return max(fit, key=lambda v: (v.smaller, v.recall_rerank_min), default=None)


# -- output -----------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def print_size(result: SizeResult) -> None:
    kind = "semi-synthetic" if result.semi_synthetic else "real MiniLM vectors"
    table = Table(
        title=f"{result.n:,} vectors ({kind}), k = 10, {result.queries} held-out real queries, "
        "one at a time",
        title_justify="left",
    )
    columns = (
        "method", "B/vec", "× smaller", "RSS B/vec", "recall raw", "recall re-ranked",
        "ms p50 raw", "ms p50", "ms mean", "flat p50 (block)", "p50 ÷ flat", "fit s", "build s",
    )  # fmt: skip
    for column in columns:
        if column == "method":
            table.add_column(column, no_wrap=True)
        else:
            table.add_column(column, justify="right")
    for row in result.rows:
        table.add_row(
            row.method,
            _f(row.bytes_per_vector, 1),
            _f(row.smaller, 2),
            _f(row.rss_bytes_per_vector, 0),
            _f(row.recall_raw, 3),
            _f(row.recall_rerank, 3),
            _f(row.raw_ms_p50),
            _f(row.ms_p50),
            _f(row.ms_mean),
            _f(row.flat_ms_p50),
            _f(row.vs_flat),
            _f(row.fit_s, 1),
            _f(row.build_s, 1),
        )
    console.print(table)
    console.print(
        f"mean exact score of the top-1 / 10th hit: {result.top1_score_mean:.3f} / "
        f"{result.top10_score_mean:.3f}; VectorIndex id bookkeeping "
        f"≈ {result.ids_rss_bytes_per_vector:.0f} B/vector RSS (not in B/vec)"
    )
    for name, why in result.skipped.items():
        console.print(f"  {name}: not run at this size: {why}")
    deep = [row for row in result.rows if row.recall_deep is not None]
    if deep:
        extra = Table(title="deeper exact re-rank (--deep-rerank)", title_justify="left")
        for column in ("method", "candidates", "recall re-ranked", "ms p50", "ms mean"):
            extra.add_column(column, justify="left" if column == "method" else "right")
        for row in deep:
            extra.add_row(
                row.method,
                str(row.deep_candidates),
                _f(row.recall_deep, 3),
                _f(row.deep_ms_p50),
                _f(row.deep_ms_mean),
            )
        console.print(extra)
    notes = {row.note: row.method for row in result.rows if row.note}
    for note, method in notes.items():
        console.print(f"  {method}: {note}")


def print_verdicts(found: Sequence[Verdict], chosen: Verdict | None) -> None:
    table = Table(
        title=f"Goal: ≥ {GOAL_SMALLER:.0f}× smaller than fp32, recall@10 ≥ {GOAL_RECALL} after "
        "re-rank, p50 and mean no higher than flat's at 100k and 1M",
        title_justify="left",
    )
    columns = ("codec", "× smaller", "worst recall re-ranked", "slower than flat at", "not run at")
    for column in (*columns, "goal"):
        table.add_column(column)
    for v in found:
        table.add_row(
            v.codec,
            f"{v.smaller:.2f}",
            f"{v.recall_rerank_min:.4f}",
            ", ".join(v.slower_at) or "-",
            ", ".join(v.unmeasured_at) or "-",
            "[green]met" if v.meets_goal else "[red]not met",
        )
    console.print(table)
    pick = "none" if chosen is None else f"{chosen.codec} ({chosen.smaller:.2f}× smaller)"
    console.print(f"default codec the measurement picks: [bold]{pick}")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=HERE
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, check=True, cwd=HERE
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    from memos.codecs import _fp8scan

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "numpy": np.__version__,
        "fp8_kernel": _fp8scan.backend(),
    }


def run_mode(config: Config) -> str:
    """``quick``, ``full`` (every setting at its default) or ``custom``."""
    if config.quick:
        return "quick"
    defaults = parse_args([str(config.locomo), "--out-dir", str(config.out_dir)])
    return "full" if config == defaults else "custom"


def write_json(config: Config, payload: dict[str, Any]) -> Path:
    mode = run_mode(config)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = config.out_dir / f"codecs-{mode}-{stamp}.json"
    config.out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return path


def row_dict(row: Row) -> dict[str, Any]:
    return asdict(row) | {"smaller": row.smaller, "p50_vs_flat": row.vs_flat}


# -- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    commit = git_commit()
    # The embedding child process inherits these: nothing is downloaded.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    load_start = load_average()
    console.print(f"load average at start: {load_start}")
    names, families = registered_codecs()
    console.print(f"registered codecs: {', '.join(names)}; families: {', '.join(families)}")
    chosen_names = codec_names(config)
    console.print(f"benchmarked: {', '.join(chosen_names)}")

    corpus = collect_corpus(config)
    for source, count in corpus.counts().items():
        console.print(f"  {source}: {count:,} of {corpus.pool_sizes[source]:,} distinct")
    vectors, embed_s = embed_cached(corpus.sentences, config.out_dir)
    base_rows, query_rows = split_queries(vectors, config.n_queries, config.seed)
    real_base = np.ascontiguousarray(vectors[base_rows])
    queries = np.ascontiguousarray(vectors[query_rows])
    console.print(f"real base set {len(real_base):,} vectors, {len(queries):,} held-out queries")

    results = []
    largest = max(size_of(label, len(real_base)) for label in config.sizes)
    for label in config.sizes:
        with_ivf = config.ivf and size_of(label, len(real_base)) == largest
        results.append(measure_size(config, label, real_base, queries, chosen_names, with_ivf))
        print_size(results[-1])
    speed_sizes = [r.label for r in results if r.n >= 100_000] or [results[-1].label]
    found = verdicts(results, speed_sizes)
    chosen = pick_default(found)
    for result in results:
        print_size(result)
    print_verdicts(found, chosen)
    never = [name for name in chosen_names if name not in {v.codec for v in found}]
    if never:
        console.print(f"not run at any size (too few vectors to fit): {', '.join(never)}")

    load_end = load_average()
    console.print(f"load average at end: {load_end}")
    payload = {
        "benchmark": "codecs",
        "mode": run_mode(config),
        "config": asdict(config),
        "machine": machine(),
        "git_commit_at_start": commit,
        "started_load_average": load_start,
        "ended_load_average": load_end,
        "registered_codecs": names,
        "codec_families": families,
        "benchmarked_codecs": chosen_names,
        "corpus": {
            "sentences": len(corpus.sentences),
            "counts": corpus.counts(),
            "distinct_pool_sizes": corpus.pool_sizes,
            "files_read": corpus.files_read,
            "embedding_seconds": embed_s,
            "base": len(real_base),
            "queries": len(queries),
        },
        "sizes": [
            {k: v for k, v in asdict(r).items() if k != "rows"}
            | {"rows": [row_dict(row) for row in r.rows]}
            for r in results
        ],
        "speed_goal_sizes": speed_sizes,
        "verdicts": [asdict(v) for v in found],
        "default_pick": None if chosen is None else chosen.codec,
        "not_run_at_any_size": never,
    }
    console.print(f"results: {write_json(config, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
