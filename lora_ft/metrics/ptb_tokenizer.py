"""Pure-Python port of the PTB tokenisation that the COCO caption scorer applies before ROUGE-L, CIDEr and METEOR.

The COCO scripts (``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer``, used by the official E2E scorer) run
Stanford CoreNLP 3.4.1's ``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase`` through Java, then
drop the tokens in :data:`PUNCTUATIONS`. Why a port instead of calling the jar: it needs no Java (ROUGE-L and
CIDEr can be scored where Java is missing), no temporary file written inside site-packages (which the wrapper
does, and which fails on read-only installs) and no JVM start per call.

How it is ported: PTBTokenizer is a JFlex scanner. :func:`ptb_tokenize` emulates JFlex on the scanner's rules
(longest match wins, trailing context included; ties go to the earlier rule; an action may push characters back). Its
macros (``{WORD}``, ``{SGML}``, ...) live in :mod:`lora_ft.metrics.ptb_macros`.
The rules are those of CoreNLP's ``PTBLexer.flex`` (its 2012 to 2017 versions bracket 3.4.1), settled rule by rule
against the 3.4.1 jar shipped in the pycocoevalcap wheel: no Americanisation, no escaping of ``/`` and ``*``,
``£`` written as ``#``, ``[``/``]`` as ``-LSB-``/``-RSB-``, LaTeX-style quotes, assimilations split (``gonna`` ->
``gon na``), and ``-lowerCase`` lower-casing every token (so ``(`` becomes ``-lrb-``, which the case-sensitive
COCO punctuation filter keeps). Checked against the jar: identical tokens on all 18,877 E2E references and
example outputs in ../shared/data, and on 250,000 generated lines (E2E sentences with random insertions of
punctuation, quotes, contractions, abbreviations, URLs..., and random ASCII and Unicode character soup).

The COCO wrapper writes a batch of captions one per line to one file, and a few rules look past the end of a
line (whether "U.S." ends a sentence depends on the next word, even on the next line): :func:`coco_tokenize_batch`
tokenises a batch the same way. Not reproduced: a tag-like ``<...>`` spanning two lines (the jar would make one
token of it and break the wrapper's line alignment).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence

from .ptb_macros import (  # the .flex macros the rules below are written in
    _L, _D, _WORD, _SPACE, _NEWLINE, _SPACENL, _SGML, _SENTEND, _DATE, _NUMBER, _SUBSUPNUM, _FRAC, _FRAC2, _DOLSIGN,
    _DOLSIGN2, _THING, _THINGA, _THING3, _ACRO, _HTHING, _REDAUX, _SWORD, _SREDAUX, _APOWORD, _APOWORD2, _FULLURL,
    _LIKELYURL, _EMAIL, _FILENAME, _TWITTER, _ABBREV1, _ABBREV3, _ABBREV4, _ACRONYM, _ACRONYM_NEXT, _SMILEY,
    _ASIANSMILEY, _PHONE, _LDOTS, _INSENTP, _QUOTES, _DBLQUOT, _TBSPEC, _TBSPEC2, _MISCSYMBOL,
)

__all__ = ["PUNCTUATIONS", "ptb_tokenize", "coco_tokenize", "coco_tokenize_batch", "coco_tokenize_all"]

# Dropped after tokenisation, exactly the list in pycocoevalcap/tokenizer/ptbtokenizer.py (case-sensitive).
PUNCTUATIONS: frozenset[str] = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)


# ---- Token normalisations (the actions' helpers) ----
_LEFT_QUOTES = [
    (re.compile("[\u0091\u2018\u201b\u2039]"), "`"),
    (re.compile("[\u0092\u2019\u203a]"), "'"),
    (re.compile("[\u0093\u201c\u00ab]"), "``"),
    (re.compile("[\u0094\u201d\u00bb]"), "''"),
]


def _latex_quotes(tok: str, probably_left: bool) -> str:
    """PTBLexer.latexQuotes: straight quotes by guessed side, curly quotes by their shape."""
    if probably_left:
        tok = re.sub("&apos;|'", "`", tok)
        tok = re.sub('"|&quot;', "``", tok)
    else:
        tok = re.sub("&apos;|'", "'", tok)
        tok = re.sub('"|&quot;', "''", tok)
    for pattern, repl in _LEFT_QUOTES:
        tok = pattern.sub(repl, tok)
    return tok


def _normalize_currency(tok: str) -> str:
    """PTBLexer.normalizeCurrency (on by default in 3.4.1): the old WSJ treebank only knows $ and #."""
    tok = tok.replace("\u00a2", "cents").replace("\u00a3", "#")
    return re.sub("[\u0080\u00a4\u20a0\u20ac]", "$", tok)


def _normalize_fractions(tok: str) -> str:
    """normalizeFractions: the composed fractions the lexer knows, spelt out (others of U+2155-U+215E stay)."""
    for char, text in (("\u00bc", "1/4"), ("\u00bd", "1/2"), ("\u00be", "3/4"), ("\u2153", "1/3"), ("\u2154", "2/3")):
        tok = tok.replace(char, text)
    return tok


def _nbsp(tok: str) -> str:
    """normalizeSpace: a token never contains a plain space."""
    return tok.replace(" ", "\u00a0")


def _no_soft_hyphen(tok: str) -> str:
    """removeSoftHyphens: soft hyphens only mark where a word may break; a token of nothing else becomes "-"."""
    return tok.replace("\u00ad", "") or "-"


# An action maps the matched text (without trailing context) to (tokens to emit, characters consumed).
_Action = Callable[[str], tuple[list[str], int]]


def _emit(transform: Callable[[str], str] = lambda t: t) -> _Action:
    return lambda text: ([transform(text)], len(text))


def _skip(text: str) -> tuple[list[str], int]:
    return [], len(text)


def _push_back(n: int) -> _Action:
    """yypushback(n): emit the text minus its last n characters, rescan those."""
    return lambda text: ([text[:-n]], len(text) - n)


def _acronym_at_sentence_end(text: str) -> tuple[list[str], int]:
    """processAcronym: 'U.S.' then an extra '.'; a single letter 'A.' becomes 'A' then '.'."""
    return ([text[:-1]] if len(text) == 2 else [text]), len(text) - 1


def _with_extra_period(text: str) -> tuple[list[str], int]:
    """Abbreviation that also ends the sentence: 'etc.' then '.' (the period is pushed back and rescanned)."""
    return [text], len(text) - 1


def _hyphens(text: str) -> tuple[list[str], int]:
    return (["--"] if 3 <= len(text) <= 4 else [text]), len(text)


# Rules in PTBLexer.flex order: (ASCII characters a match can start with, pattern, trailing context, action).
# The first field only speeds up the scan (rules that cannot start at the current ASCII character are skipped);
# None means any character; at a non-ASCII character every rule is tried.
_AZ = "[A-Za-z]"
_AZ09 = "[A-Za-z0-9]"
_RULE_SPECS: list[tuple[str | None, str, str | None, _Action]] = [
    ("[cCfF]", "(?i:c\\+\\+|[cf]#)", None, _emit()),
    ("[cC']", "(?i:cannot|'twas)", None, _push_back(3)),  # can|not, 't|was
    ("[gGlLwW']", "(?i:gonna|gotta|lemme|gimme|wanna|'tis)", None, _push_back(2)),  # gon|na, 't|is
    ("<", _SGML, None, _emit(_nbsp)),
    ("&", "(?i:&(?:MD|mdash|ndash);)|[\u0096\u0097\u2013\u2014\u2015]", None, lambda t: (["--"], len(t))),
    ("&", "(?i:&amp;)", None, lambda t: (["&"], len(t))),
    ("&", "(?i:&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);)", None, _emit()),
    ("[A-Za-z&]", _WORD, _REDAUX, _emit(_no_soft_hyphen)),
    (_AZ, _SWORD, _SREDAUX, _emit(_no_soft_hyphen)),
    ("[A-Za-z&]", _WORD, None, _emit(_no_soft_hyphen)),
    ("[A-Za-z'&]", _APOWORD, None, _emit()),
    ("[yY]", _APOWORD2, _L, _emit()),
    ("[hH]", _FULLURL, None, _emit()),
    (r"[^ \t\n\f\r\"`'<>|.!?(){}\-_$]", _LIKELYURL, None, _emit()),
    ("[<&A-Za-z0-9]", _EMAIL, None, _emit()),
    ("[@#]", _TWITTER, None, _emit()),
    ("['&]", _REDAUX, "[^A-Za-z]", _emit(lambda t: _latex_quotes(t, False))),
    ("[nN]", _SREDAUX, None, _emit(lambda t: _latex_quotes(t, False))),
    ("[0-9]", _DATE, None, _emit()),
    ("[-+0-9.:,]", _NUMBER, None, _emit(_no_soft_hyphen)),
    ("", _SUBSUPNUM, None, _emit()),
    ("[0-9]", _FRAC, None, _emit(_nbsp)),
    ("", _FRAC2, None, _emit(_normalize_fractions)),
    ("[-cCpPaAsS]", _TBSPEC, None, _emit(lambda t: re.sub("(?i:&amp;)", "&", t))),
    (_AZ09, _THING3, None, _emit()),
    ("[A-Z$#]", _DOLSIGN, None, _emit()),
    ("", _DOLSIGN2, None, _emit(_normalize_currency)),
    (_AZ, _ACRONYM, f"{_SPACENL}+(?:{_ACRONYM_NEXT}|{_SGML}){_SPACENL}", _acronym_at_sentence_end),
    (_AZ, _ABBREV3, f"{_SPACENL}?{_D}", _emit()),
    ("[pPcC]", "(?i:pt[ey]|co)\\.", f"{_SPACE}(?i:ltd|lim)", _emit()),
    (_AZ, _ABBREV1, _SENTEND, _with_extra_period),
    (_AZ, _ABBREV1, "..", _emit()),
    (_AZ, _ABBREV1, None, _with_extra_period),  # only at the end of the text
    (_AZ, f"{_ABBREV4}\\.", None, _emit()),
    (_AZ, _ABBREV4, _SPACE, _emit()),
    (_AZ, _ACRO, _SPACENL, _emit()),
    ("['&]", _TBSPEC2, _SPACENL, _emit()),
    (_AZ09, _FILENAME, f"(?:{_SPACENL}|[.?!,\"'<])", _emit()),
    ("[A-Za-z&]", f"{_WORD}\\.", _INSENTP, _emit(_no_soft_hyphen)),
    ("[(0-9]", _PHONE, None, _emit(lambda t: _nbsp(t).replace("(", "-LRB-").replace(")", "-RRB-"))),
    ('["&]', _DBLQUOT, "[A-Za-z0-9$]", _emit(lambda t: _latex_quotes(t, True))),
    ('["&]', _DBLQUOT, None, _emit(lambda t: _latex_quotes(t, False))),
    ("[+%&~^|\\\\]", "[+%&\u2030\u2031~^|\\\\]", None, _emit()),
    ("[<>]", "<<|>>", None, _emit()),
    ("[<&]", "(?i:&lt;)|<", None, lambda t: (["<"], len(t))),
    ("[>&]", "(?i:&gt;)|>", None, lambda t: ([">"], len(t))),
    ("[<>:;=]", _SMILEY, "[^A-Za-z0-9]", _emit(lambda t: t.replace("(", "-LRB-").replace(")", "-RRB-"))),
    ("[-^x=~<>'(]", _ASIANSMILEY, None, _emit(lambda t: t.replace("(", "-LRB-").replace(")", "-RRB-"))),
    ("\\[", "\\[", None, lambda t: (["-LSB-"], 1)),
    ("\\]", "\\]", None, lambda t: (["-RSB-"], 1)),
    ("[{]", "\\{", None, lambda t: (["-LCB-"], 1)),
    ("[}]", "\\}", None, lambda t: (["-RCB-"], 1)),
    ("[(]", "\\(", None, lambda t: (["-LRB-"], 1)),
    ("[)]", "\\)", None, lambda t: (["-RRB-"], 1)),
    ("-", "-+", None, _hyphens),
    ("[.]", _LDOTS, None, lambda t: (["..."], len(t))),
    ("[@#_]", "@+|#+|_+", None, _emit()),
    ("[*\\\\]", "\\*+|(?:\\\\\\*){1,3}", None, _emit()),
    ("[,;:]", _INSENTP, None, _emit()),
    ("[?!]", "[?!]+", None, _emit()),
    ("[.]", "[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa]", None, _emit()),
    ("=", "=", None, _emit()),
    ("/", "/", None, _emit()),
    (_AZ09, f"{_HTHING}\\.", _INSENTP, _emit(_no_soft_hyphen)),
    (_AZ09, _HTHING, None, _emit(_no_soft_hyphen)),
    (_AZ09, f"{_THING}\\.", _INSENTP, _emit()),
    (_AZ09, _THING, None, _emit()),
    ("[A-Z]", f"{_THINGA}\\.", _INSENTP, _emit(lambda t: re.sub("(?i:&amp;)", "&", t))),
    ("[A-Z]", _THINGA, None, _emit(lambda t: re.sub("(?i:&amp;)", "&", t))),
    ("'", "'", "[A-Za-z][^ \t\n\r\u00a0]", _emit(lambda t: _latex_quotes(t, True))),
    ("['&]", _REDAUX, None, _emit(lambda t: _latex_quotes(t, False))),
    ("['&`]", _QUOTES, None, _emit(lambda t: _latex_quotes(t, False))),
    ("", _MISCSYMBOL, None, _emit()),
    ("[\\x00 \\t]", f"\\x00|{_SPACE}+|[\u200b\u200e\u200f\ufeff]", None, _skip),
    ("[\\r\\n\\x0b\\x0c]", _NEWLINE, None, _skip),
    ("&", "(?i:&nbsp;)", None, _skip),
    (None, ".", None, _skip),  # untokenizable: the jar's default ("firstDelete") drops it
]

# Each rule compiled as (?P<t>pattern)(?P<c>trailing context): JFlex counts the trailing context when it picks
# the longest match, then pushes it back.
_RULES: list[tuple[re.Pattern[str], _Action]] = [
    (re.compile(f"(?P<t>{pattern})" + (f"(?P<c>{context})" if context else ""), re.DOTALL), action)
    for _, pattern, context, action in _RULE_SPECS
]
# _CANDIDATES[code]: the rules worth trying at an ASCII character (in rule order).
_CANDIDATES: list[list[tuple[re.Pattern[str], _Action]]] = [
    [rule for rule, (first, *_) in zip(_RULES, _RULE_SPECS) if first is None or (first and re.fullmatch(first, chr(c)))]
    for c in range(128)
]

# Fast path for the commonest token, a plain ASCII word followed by white space: no rule matches longer than
# the word, and every rule matching the same length emits the word unchanged, except these.
_PLAIN_WORD = re.compile(r"[A-Za-z]+(?=[ \t\n]|\Z)")
_NOT_PLAIN = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"])
# Fast path for spaces (most of the scanner's steps): at a space only the white-space rule and the catch-all can
# match, and both emit nothing; a run of spaces is skipped at once.
_SPACES = re.compile(" +")
assert all(action is _skip for _, action in _CANDIDATES[ord(" ")])


def _scan(text: str, pos: int, end: int, all_rules: bool = False) -> list[str]:
    """The tokens of ``text[pos:end]``; the rules may look past ``end`` (trailing context)."""
    tokens: list[str] = []
    while pos < end:
        if not all_rules:
            if text[pos] == " ":
                pos = _SPACES.match(text, pos, end).end()  # type: ignore[union-attr]
                continue
            plain = _PLAIN_WORD.match(text, pos, end + 1)
            if plain is not None and plain.group().lower() not in _NOT_PLAIN:
                tokens.append(plain.group())
                pos = plain.end()
                continue
        code = ord(text[pos])
        rules = _RULES if all_rules or code >= 128 else _CANDIDATES[code]
        best_len = -1
        best: tuple[re.Match[str], _Action] | None = None
        for pattern, action in rules:
            match = pattern.match(text, pos)
            if match is not None and match.end() - pos > best_len:
                best_len = match.end() - pos
                best = (match, action)
        assert best is not None  # the last rule matches any character
        match, action = best
        # A token never runs into the next line (the jar would keep the newline inside it, an edge case).
        emitted, consumed = action(match.group("t")[: end - pos])
        tokens.extend(emitted)
        pos += max(consumed, 1)
    return tokens


def ptb_tokenize(text: str, following: str | None = None, *, _all_rules: bool = False) -> list[str]:
    """Tokenise one line as Stanford PTBTokenizer 3.4.1 does with its default options (before ``-lowerCase``).

    ``following`` is the rest of the file the jar would read after this line (a few rules look past the end
    of the line, e.g. to decide whether "U.S." ends a sentence); None means this is the file's last line.
    ``_all_rules`` turns off the first-character shortcuts (for testing that they change nothing).
    """
    full = text if following is None else text + "\n" + following
    return _scan(full, 0, len(text), _all_rules)


def _coco_filter(tokens: list[str]) -> str:
    """-lowerCase and the jar's output line, then pycocoevalcap's removal of punctuation tokens, as it does it."""
    line = " ".join(token.lower() for token in tokens)
    return " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)


def coco_tokenize(caption: str) -> str:
    """One caption as pycocoevalcap's PTBTokenizer returns it when it is alone in its batch.

    PTB tokens, lower-cased, punctuation tokens dropped, joined by spaces.
    """
    return _coco_filter(ptb_tokenize(caption.replace("\n", " ")))


def coco_tokenize_batch(captions: Sequence[str]) -> list[str]:
    """Captions as pycocoevalcap's PTBTokenizer returns them when tokenised together, in this order.

    The wrapper writes the captions one per line to one file and tokenises the file, so the end of a line
    can see the lines after it.
    """
    lines = [c.replace("\n", " ") for c in captions]
    full = "\n".join(lines)
    out: list[str] = []
    start = 0
    for line in lines:
        out.append(_coco_filter(_scan(full, start, start + len(line))))
        start += len(line) + 1
    return out


def coco_tokenize_all(captions: dict[str, list[str]]) -> dict[str, list[str]]:
    """Drop-in for ``PTBTokenizer().tokenize`` on ``{id: [caption, ...]}`` (plain strings, not COCO dicts)."""
    keys = [key for key, caps in captions.items() for _ in caps]
    flat = coco_tokenize_batch([c for caps in captions.values() for c in caps])
    out: dict[str, list[str]] = {key: [] for key in captions}
    for key, tokenized in zip(keys, flat):
        out[key].append(tokenized)
    return out


if __name__ == "__main__":  # pragma: no cover - handy for comparing with the jar by hand
    _lines = sys.stdin.read().split("\n")
    for _i, _line in enumerate(_lines):
        _rest = "\n".join(_lines[_i + 1 :]) if _i + 1 < len(_lines) else None
        print(" ".join(t.lower() for t in ptb_tokenize(_line, _rest)))
