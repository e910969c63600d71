"""Keyword search for stores without a search engine: FTS5's tokenizing, rebuilt, and BM25.

A backend that keeps its own inverted index (Redis has no full-text search without modules)
indexes :func:`tokens` of each active item's text and ranks with FTS5's bm25 (Redis:
:data:`BM25_SCRIPT`, run next to its index), so its results agree with the SQLite store's FTS5
tables (``porter unicode61 remove_diacritics 2``):

- words are runs of letters and digits ("_" and punctuation separate them), lowercased, Latin
  letters without their diacritics ("Café" and "cafe" are one word);
- each word of 3 to 64 bytes is reduced by the Porter stemmer as FTS5 runs it: Porter's own
  reference version (with its two departures from the paper, ``-bli -> -ble`` and
  ``-logi -> -log``), applied to the word's UTF-8 bytes, so "painted" and "painting" both
  index "paint" and "incredibly" and "incredible" both index "incred".

Checked against FTS5 itself: every word of the LoCoMo conversations and of a 79k-word
vocabulary gets the same terms. What still differs is rare: symbols outside the Basic
Multilingual Plane (emoji) and private-use characters, which FTS5 indexes as words and this does
not (queries keep letters and digits only, so no query names them: they change only a document's
length), and about 0.3% of letters of rarer scripts or stacked diacritics, which fold otherwise.

The query side follows :func:`stores._fts5.match_query`: user text is only ever cut into words
(never syntax), stop words are dropped unless that leaves nothing, at most ``MAX_TERMS`` words
count, and a document needs any one of them. Where FTS5 would treat a word that tokenizes into
several terms as a phrase, the terms here count separately (rare: only a word Python and FTS5
split differently).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from .._fts5 import MAX_TERMS, STOP_WORDS  # relative: stores/ is installed as memos.stores

# FTS5's bm25() constants
K1 = 1.2
B = 0.75
# FTS5 floors the idf of a term found in half the documents or more at this (never zero)
MIN_IDF = 1e-6
# FTS5's porter tokenizer passes shorter and longer tokens through unstemmed
_STEM_BYTES = range(3, 65)

# Letters and digits; "_" is a separator, as it is for unicode61.
_WORD = re.compile(r"[^\W_]+")


def tokens(text: str) -> list[str]:
    """The terms FTS5 would index for ``text``, in order (repeats kept: they are the term
    frequencies, and their number is the document's length)."""
    return [_stem(word) for word in _WORD.findall(_fold(text))]


def term_counts(text: str) -> tuple[Counter[str], int]:
    """Each term's frequency in ``text`` and the text's length in terms."""
    found = tokens(text)
    return Counter(found), len(found)


def query_terms(text: str) -> list[str]:
    """The terms a query searches for, one per kept query word (a term twice when two words
    stem alike, as two FTS5 phrases would count twice); empty when the text has no word."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    kept = [w for w in words if w not in STOP_WORDS] or words
    return [term for word in kept[:MAX_TERMS] for term in tokens(word)]


# FTS5's bm25 (negated so higher is better) and the top k, run inside Redis next to the index,
# so a search is one round trip that sends back k scores instead of every posting and document
# length. tests/test_redis_store.py holds the same arithmetic in Python, in the same order, on
# the same doubles, and checks the scores are equal to the last bit. Scores come back as text
# ("%.17g" round-trips a double) because Redis truncates a Lua number to an integer.
#
# KEYS: the lengths hash (item -> length in terms), the total length, the items sorted set
#       (write order: ties go to the item written first), then each distinct term's postings.
# ARGV: K1, B, the idf floor, k, whether a filter applies ("1" or "0"), the number of query
#       terms, for each query term (repeats count) the index in KEYS of its postings, then, when
#       filtered, the ids the filter allows.
BM25_SCRIPT = """
local k1, b, min_idf = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local k, filtered, n_terms = tonumber(ARGV[4]), ARGV[5] == '1', tonumber(ARGV[6])
local allowed = {}
for i = 7 + n_terms, #ARGV do allowed[ARGV[i]] = true end

local documents = redis.call('HLEN', KEYS[1])
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
local average = 0.0
if documents > 0 then average = total / documents end

-- each term's postings as Redis sends them (item, tf, item, tf, ...), and the items to score
local postings, docs, seen = {}, {}, {}
for i = 4, #KEYS do
  local flat = redis.call('HGETALL', KEYS[i])
  for j = 1, #flat, 2 do
    local doc = flat[j]
    if not seen[doc] and (not filtered or allowed[doc]) then
      seen[doc] = true
      docs[#docs + 1] = doc
    end
  end
  postings[i] = flat
end

-- in chunks: unpack() is bounded by Lua's C stack
local function each_value(command, key, ids, found)
  for start = 1, #ids, 1000 do
    local last = math.min(start + 999, #ids)
    local values = redis.call(command, key, unpack(ids, start, last))
    for j = start, last do found[ids[j]] = tonumber(values[j - start + 1]) end
  end
end
-- each item's length normalisation; an item the filter rules out gets none: it is not scored
local norms = {}
each_value('HMGET', KEYS[1], docs, norms)
for doc, length in pairs(norms) do
  local relative = 0.0
  if average ~= 0 then relative = length / average end
  norms[doc] = 1 - b + b * relative
end

local scores, ranked = {}, {}
for t = 1, n_terms do
  local flat = postings[tonumber(ARGV[6 + t])]
  local idf = math.log((documents - #flat / 2 + 0.5) / (#flat / 2 + 0.5))
  if not (idf > 0) then idf = min_idf end
  for j = 1, #flat, 2 do
    local doc, tf = flat[j], tonumber(flat[j + 1])
    local norm = norms[doc]
    if norm and tf ~= 0 then
      if scores[doc] == nil then scores[doc] = 0.0; ranked[#ranked + 1] = doc end
      scores[doc] = scores[doc] + idf * tf * (k1 + 1) / (tf + k1 * norm)
    end
  end
end

-- the k-th best score, found by sorting bare numbers (a comparator function costs more than
-- everything above); every item scoring at least that may reach the top k
local values = {}
for j = 1, #ranked do values[j] = scores[ranked[j]] end
table.sort(values)
local floor = values[math.max(1, #values - k + 1)]
local best = {}
for j = 1, #ranked do
  if scores[ranked[j]] >= floor then best[#best + 1] = ranked[j] end
end
-- best first; the write order decides ties
local rows = {}
each_value('ZMSCORE', KEYS[3], best, rows)
table.sort(best, function(x, y)
  if scores[x] ~= scores[y] then return scores[x] > scores[y] end
  local rx, ry = rows[x] or math.huge, rows[y] or math.huge
  if rx ~= ry then return rx < ry end
  return x < y
end)
local reply = {}
for j = 1, math.min(k, #best) do
  reply[#reply + 1] = best[j]
  reply[#reply + 1] = string.format('%.17g', scores[best[j]])
end
return reply
"""


def bm25_script_args(
    terms: Sequence[str], k: int, allowed: Sequence[str] | None
) -> tuple[list[str], list[str | int]]:
    """The distinct terms whose postings :data:`BM25_SCRIPT` reads (KEYS from the fourth on,
    in this order), and its ARGV."""
    unique = list(dict.fromkeys(terms))
    at = {term: 4 + n for n, term in enumerate(unique)}
    args: list[str | int] = [repr(K1), repr(B), repr(MIN_IDF), k]
    args += ["0" if allowed is None else "1", len(terms), *(at[term] for term in terms)]
    return unique, [*args, *(allowed or ())]


def _fold(text: str) -> str:
    """Lowercase, and Latin letters without their diacritics (FTS5 leaves other scripts'
    marks, such as Greek tonos or Cyrillic breve, in place)."""
    lowered = text.lower()
    if lowered.isascii():
        return lowered
    return "".join(_fold_char(ch) for ch in lowered.translate(_CASE_FOLD))


# where FTS5's case folding differs from str.lower()
_CASE_FOLD = str.maketrans({"µ": "μ", "ς": "σ", "ſ": "s"})
_DIACRITICS = range(0x300, 0x370)  # the Combining Diacritical Marks block


@lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    if ord(ch) in _DIACRITICS:
        return ""  # a diacritic written as its own character goes too
    decomposed = unicodedata.normalize("NFD", ch)
    latin = "LATIN" in unicodedata.name(decomposed[0], "")
    if latin and all(ord(mark) in _DIACRITICS for mark in decomposed[1:]):
        return decomposed[0]
    return ch


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    # FTS5 stems bytes: a non-ASCII byte is a consonant, and the length limits count bytes.
    raw = word.encode("utf-8")
    if len(raw) not in _STEM_BYTES:
        return word
    return porter(raw.decode("latin-1")).encode("latin-1").decode("utf-8", errors="replace")


# The Porter stemmer (M.F. Porter, "An algorithm for suffix stripping", 1980), as in his
# reference implementation. Suffix lists are in that implementation's order: the first suffix a
# word ends with is the one tried, and when its condition fails no other one is.
_STEP2 = (
    ("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"),
    ("izer", "ize"), ("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"),
    ("ousli", "ous"), ("ization", "ize"), ("ation", "ate"), ("ator", "ate"), ("alism", "al"),
    ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous"), ("aliti", "al"),
    ("iviti", "ive"), ("biliti", "ble"), ("logi", "log"),
)  # fmt: skip
_STEP3 = (
    ("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"),
    ("ful", ""), ("ness", ""),
)  # fmt: skip
_STEP4 = (
    "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion",
    "ou", "ism", "ate", "iti", "ous", "ive", "ize",
)  # fmt: skip
_VOWELS = frozenset("aeiou")


def porter(word: str) -> str:
    """The Porter stem of a lowercase word (words of one or two letters are kept)."""
    if len(word) < 3:
        return word
    word = _step1c(_step1b(_step1a(word)))
    word = _replace_suffix(word, _STEP2, min_measure=1)
    word = _replace_suffix(word, _STEP3, min_measure=1)
    return _step5(_step4(word))


def _consonants(word: str) -> list[bool]:
    """Which letters are consonants: not a vowel, and a "y" only after a vowel or first."""
    flags: list[bool] = []
    for i, ch in enumerate(word):
        flags.append(ch not in _VOWELS and (ch != "y" or i == 0 or not flags[i - 1]))
    return flags


def _measure(stem: str) -> int:
    """m in [C](VC){m}[V]: how many times a vowel is followed by a consonant."""
    flags = _consonants(stem)
    return sum(1 for i in range(1, len(flags)) if flags[i] and not flags[i - 1])


def _has_vowel(stem: str) -> bool:
    return not all(_consonants(stem))


def _double_consonant(stem: str) -> bool:
    return len(stem) >= 2 and stem[-1] == stem[-2] and _consonants(stem)[-1]


def _cvc(stem: str) -> bool:
    """Ends consonant-vowel-consonant, the last not w, x or y (as in "hop", not "snow")."""
    if len(stem) < 3 or stem[-1] in "wxy":
        return False
    flags = _consonants(stem)
    return flags[-3] and not flags[-2] and flags[-1]


def _step1a(word: str) -> str:
    if word.endswith(("sses", "ies")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _step1b(word: str) -> str:
    if word.endswith("eed"):
        return word[:-1] if _measure(word[:-3]) > 0 else word
    for suffix in ("ed", "ing"):
        stem = word[: -len(suffix)]
        if word.endswith(suffix) and _has_vowel(stem):
            return _step1b_tidy(stem)
    return word


def _step1b_tidy(stem: str) -> str:
    if stem.endswith(("at", "bl", "iz")):
        return stem + "e"
    if _double_consonant(stem) and stem[-1] not in "lsz":
        return stem[:-1]
    if _measure(stem) == 1 and _cvc(stem):
        return stem + "e"
    return stem


def _step1c(word: str) -> str:
    if word.endswith("y") and _has_vowel(word[:-1]):
        return word[:-1] + "i"
    return word


def _replace_suffix(word: str, rules: tuple[tuple[str, str], ...], *, min_measure: int) -> str:
    for suffix, replacement in rules:
        if word.endswith(suffix):
            stem = word[: -len(suffix)]
            return stem + replacement if _measure(stem) >= min_measure else word
    return word


def _step4(word: str) -> str:
    for suffix in _STEP4:
        if not word.endswith(suffix):
            continue
        stem = word[: -len(suffix)]
        if suffix == "ion" and not stem.endswith(("s", "t")):
            continue  # "-ion" counts only after s or t; "-ou" is tried next, as in the original
        return stem if _measure(stem) > 1 else word
    return word


def _step5(word: str) -> str:
    if word.endswith("e"):
        measure = _measure(word[:-1])
        if measure > 1 or (measure == 1 and not _cvc(word[:-1])):
            word = word[:-1]
    if word.endswith("ll") and _measure(word) > 1:
        word = word[:-1]
    return word
