"""Pure-Python port of the PTB tokenisation that the COCO caption scorer applies before ROUGE-L, CIDEr and METEOR.

The COCO scripts (``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer``, used by the official E2E scorer) run
Stanford CoreNLP 3.4.1's ``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase`` through Java, then
drop the tokens in :data:`PUNCTUATIONS`. Why a port instead of calling the jar: it needs no Java (ROUGE-L and
CIDEr can be scored where Java is missing), no temporary file written inside site-packages (which the wrapper
does, and which fails on read-only installs) and no JVM start per call.

How it is ported: PTBTokenizer is a JFlex scanner. :func:`ptb_tokenize` emulates JFlex on the scanner's rules
(longest match wins, trailing context included; ties go to the earlier rule; an action may push characters back).
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

__all__ = ["PUNCTUATIONS", "ptb_tokenize", "coco_tokenize", "coco_tokenize_batch", "coco_tokenize_all"]

# Dropped after tokenisation, exactly the list in pycocoevalcap/tokenizer/ptbtokenizer.py (case-sensitive).
PUNCTUATIONS: frozenset[str] = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)


def _letter_class() -> str:
    """A regex character class of the BMP characters Java's Character.isLetter accepts (JFlex's [:letter:])."""
    ranges: list[tuple[int, int]] = []
    start = None
    for code in range(0x10000):
        is_letter = chr(code).isalpha()
        if is_letter and start is None:
            start = code
        elif not is_letter and start is not None:
            ranges.append((start, code - 1))
            start = None
    if start is not None:
        ranges.append((start, 0xFFFF))
    parts = [re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges]
    return "[" + "".join(parts) + "]"


# ---- Macros of PTBLexer.flex (JFlex syntax translated to Python; %caseless applies to literals only) ----
_L = _letter_class()  # [:letter:]
_D = r"\d"  # [:digit:]
_SPLET = r"&[aeiouAEIOU](?i:acute|grave|uml);"
_EXTRA_LETTERS = (
    "[\u00ad\u0237-\u024f\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02ff\u0300-\u036f\u0370-\u037d\u0384\u0385\u03cf"
    "\u03f6\u03fc-\u03ff\u0483-\u0487\u04cf\u04f6-\u04ff\u0510-\u0525\u055a-\u055f\u0591-\u05bd\u05bf\u05c1"
    "\u05c2\u05c4\u05c5\u05c7\u0615-\u061a\u063b-\u063f\u064b-\u065e\u0670\u06d6-\u06ef\u06fa-\u06ff\u070f"
    "\u0711\u0730-\u074f\u0750-\u077f\u07a6-\u07b1\u07ca-\u07f5\u07fa\u0900-\u0903\u093c\u093e-\u094e"
    "\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09bc-\u09c4\u09c7\u09c8\u09cb-\u09cd\u09d7\u09e2\u09e3"
    "\u0a01-\u0a03\u0a3c\u0a3e-\u0a4f\u0a81-\u0a83\u0abc-\u0acf\u0b82\u0bbe-\u0bc2\u0bc6-\u0bc8\u0bca-\u0bcd"
    "\u0c01-\u0c03\u0c3e-\u0c56\u0d3e-\u0d44\u0d46-\u0d48\u0e30-\u0e3a\u0e47-\u0e4e\u0eb1-\u0ebc\u0ec8-\u0ecd]"
)
_LETTER = f"(?:{_L}|{_SPLET}|{_EXTRA_LETTERS})"
_WORD = f"{_LETTER}(?:{_LETTER}|{_D})*(?:[.!?]{_LETTER}(?:{_LETTER}|{_D})*)*"
_SPACE = "[ \t\u00a0\u2000-\u200a\u3000]"
_NEWLINE = "(?:\r\n|\r|\n|\u2028|\u2029|\u000b|\u000c|\u0085)"
_SPACENL = f"(?:{_SPACE}|{_NEWLINE})"
# An SGML/XML tag (one line at most: with -preserveLines the COCO wrapper's lines must stay lines).
_SGML = (
    r"<(?:[!?][A-Za-z\-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:.\-]*(?:[ ]+(?:[A-Za-z][A-Za-z0-9_:.\-]*[ ]*=[ ]*"
    r"(?:'[^'\r\n]*'|\"[^\"\r\n]*\"|[A-Za-z][A-Za-z0-9_:.\-]*)|[A-Za-z][A-Za-z0-9_:.\-]*))*[ ]*/?"
    r"|/[A-Za-z][A-Za-z0-9_:.\-]*)[ ]*>"
)
_SENTEND = f"{_SPACENL}(?:{_SPACENL}|[A-Z]|{_SGML})"
_DATE = f"{_D}{{1,2}}[\\-\\/]{_D}{{1,2}}[\\-\\/]{_D}{{2,4}}"
# The longer alternative first: Python takes the first alternative that matches, JFlex the longest.
_NUM = f"(?:{_D}*(?:[.:,\u00ad\u066b\u066c]{_D}+)+|{_D}+)"
_NUMBER = f"[\\-+]?{_NUM}"
_SUBSUPNUM = "[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)"
_FRAC = f"(?:{_D}{{1,4}}[- \u00a0])?{_D}{{1,4}}(?:\\\\?\\/|\u2044){_D}{{1,4}}"
_FRAC2 = "[\u00bc\u00bd\u00be\u2153-\u215e]"
_DOLSIGN = r"(?:[A-Z]*\$|#)"
_DOLSIGN2 = "[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]"
_APOS = "(?:['\u0092\u2019]|(?i:&apos;))"
_APOSETC = f"(?:{_APOS}|[`\u0091\u2018\u201b])"
_LD = f"(?:{_L}|{_D})"
_THING = (
    f"(?:[dDoOlL]{_APOSETC}{_LD})?{_LD}+"
    f"(?:[-_\u058a\u2010\u2011](?:[dDoOlL]{_APOSETC}{_LD})?{_LD}+)*"
)
_THINGA = r"[A-Z]+(?:(?:[+&]|(?i:&amp;))[A-Z]+)+"
_THING3 = r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?\/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
# Longer alternatives first: Python takes the first alternative that fits, JFlex the longest.
_ACRO = (
    r"(?:(?i:canada|sino|korean|eu|japan|non)-(?i:u\.s)|(?i:u\.s\.-)(?i:u\.k|u\.s\.s\.r)"
    r"|[A-Za-z](?:\.[A-Za-z])*)"
)
_ACRO2 = (
    r"(?:(?i:canada|sino|korean|eu|japan|non)-(?i:u\.s)|(?i:u\.s\.-)(?i:u\.k|u\.s\.s\.r)"
    r"|[A-Za-z](?:\.[A-Za-z])+)"
)
_HTHING = f"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:{_ACRO2}\\.|[A-Za-z0-9\u00ad]+))+"
_REDAUX = f"{_APOS}(?:[msdMSD]|(?i:re|ve|ll))"
_SWORD = "[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*"
_SREDAUX = f"[nN]{_APOSETC}[tT]"
_APOWORD = (  # the alternatives that can match longer come first (Python stops at the first that fits)
    f"(?:[A-HJ-XZn]{_APOSETC}{_L}{{2}}{_L}*|{_L}{_L}*[aeiouyAEIOUY]{_APOSETC}[aeiouA-Z]{_L}*"
    f"|{_APOS}[nN]{_APOS}?|[lLdDjJ]{_APOS}|(?i:dunkin){_APOS}|(?i:somethin){_APOS}|(?i:ol){_APOS}"
    f"|{_APOS}(?i:em)|{_APOS}[2-9]0(?i:s)|{_APOS}(?i:till?)|{_APOS}(?i:cause)|(?i:cont'd)\\.?|(?i:'twas)"
    f"|(?i:nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)|[oO]{_APOSETC}[oO])"
)
_APOWORD2 = f"[yY]{_APOS}"
_FULLURL = r"(?i:https?)://[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-]"
# Note ",-_" in the second class: in the flex file it is a range (U+002C to U+005F: digits, capitals, @ ...).
_LIKELYURL = (
    r"(?:(?:(?i:www)\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})"
    r"|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+(?i:com|net|org|edu)))"
    r"(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?"
)
_EMAIL = (
    r"(?:(?i:&lt;)|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00a0{}]*@(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\.)*"
    r"[^ \t\n\f\r\"<>|(){}.\u00a0]+(?:(?i:&gt;)|>)?"
)
_FILENAME = (
    r"[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*\.(?i:bat|bmp|bz2|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java"
    "|jpeg|jpg|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip|3gp|wm[va]|avi|flv|mp[34g])"
)
_TWITTER = f"@[a-zA-Z_][a-zA-Z_0-9]*|#{_LETTER}+"
_ABMONTH = "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec"
_ABDAYS = "Tues|Tue|Mon|Wed|Thurs|Thu|Fri"
# States written [A]rk etc. in the flex file are case-sensitive on their first letter (so "la." is no state).
_ABSTATE = (
    "(?i:Ala|Ariz|Calif|Colo|Conn|Dak|Fla|Ga|Ind|Kans?|Ky|Md|Mich|Minn|Mo|Mont|Neb|Nev|Okla|Penn|Tenn|Va|Vt"
    "|Wisc?|Wyo)|A(?i:z|rk)|C(?i:t)|D(?i:el)|I(?i:ll)|L(?i:a)|M(?i:ass|iss)|O(?i:re)|P(?i:a)|T(?i:ex)|W(?i:ash)"
)
_ABCOMP = "Inc|Cos?|Corp|Pp?tys?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys"
_ABNUM = "tel|est|ext|sq"
_ABPTIT = "Jr|Sr|Bros|(?:Ed|Ph)\\.D|Blvd|Rd|Esq"
# Usually followed by a lower-case word: followed by a capital, they also end the sentence (extra ".").
_ABBREV1 = f"(?:(?i:{_ABMONTH}|{_ABDAYS}|{_ABCOMP}|{_ABNUM}|{_ABPTIT}|etc|al|seq|Bldg)|{_ABSTATE})\\."
# Abbreviations only before a number ("No. 5", "fig. 3"); elsewhere "no." is a word and a period.
_ABBREV3 = "(?i:ca|figs?|prop|nos?|arts?|bldg|pp|op)\\."
_ABTITLE = (
    "Mrs|Mr|Ms|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|Mt|Ft|Capt|Ste?"
    "|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Adj|Adv|Asst|Assoc|Ens|Insp|Mlle|Mme|Msgr|Sfc"
)
# Usually followed by a capitalised word (a name): never taken as a sentence end.
_ABBREV4 = (
    f"(?:{_ACRO}|(?i:a\\.k\\.a)|(?i:{_ABTITLE}|vs|Alex|Wm|Jos|Cie|cf|TREAS|Ph|Invt|Elec|Natl|M[ft]g|Dept)"
    f"|M(?i:iss)|[A-Za-z])"
)
_ACRONYM = f"{_ACRO}\\."
# Words after which an acronym's period also ends the sentence; only their first letter is case-sensitive.
_ACRONYM_NEXT = "|".join(
    word[0] + (f"(?i:{word[1:]})" if len(word) > 1 else "")
    for word in (
        "About According Additionally After An A As At But Earlier He Her Here However If In It Last Many More"
        " Mr. Ms. Now Once One Other Our She Since So Some Such That The Their Then There These They This We"
        " When While What Yet You"
    )
    .replace(".", "\\.")
    .split()
)
_SMILEY = r"[<>]?[:;=][\-o\*']?[\(\)DPdpO\\{@\|\[\]]"
_ASIANSMILEY = (
    r"[\^x=~<>]\.\[\^x=~<>]|[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)"
    r"|\([\^x=~<>']-[\^x=~<>'`]\)|\u00af\\_\(\u30c4\)_/\u00af"
)
_PHONE = r"(?:\([0-9]{3}\)[ \u00a0]?|[0-9]{3}[\- \u00a0.])[0-9]{3}[\- \u00a0.][0-9]{4}"
_LDOTS = "(?:\\.{3,5}|(?:\\.[ \u00a0]){2,4}\\.|[\u0085\u2026])"
_INSENTP = "[,;:]"
_QUOTES = (
    "(?:''|[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f\u2039\u203a"
    f"\u00ab\u00bb]{{1,2}}|{_APOS})"
)
_DBLQUOT = '(?:"|(?i:&quot;))'
_TBSPEC = (
    f"(?:(?i:-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|C\\.D\\.s|pro-|anti-|S(?:&amp;|&)P-500|S(?:&amp;|&)Ls)"
    f"|(?i:cap){_APOS}[nN]|[cC]{_APOS}(?i:est))"
)
_TBSPEC2 = f"{_APOS}[0-9][0-9]"
_MISCSYMBOL = (
    "[\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00b3\u00b4-\u00ba\u00d7\u00f7\u0387\u05be\u05c0"
    "\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b\u061e\u066a\u066d\u0703-\u070d"
    "\u07f6\u07f7\u07f8\u0964\u0965\u0e4f\u2020-\u2023\u2032-\u2038\u2044\u207a-\u207f\u208a-\u208e"
    "\u2100-\u214f\u2190-\u21ff\u2200-\u22ff\u2300-\u23ff\u2600-\u27bf\u3012\u30fb\uff01-\uff0f"
    "\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
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


def _scan(text: str, pos: int, end: int, all_rules: bool = False) -> list[str]:
    """The tokens of ``text[pos:end]``; the rules may look past ``end`` (trailing context)."""
    tokens: list[str] = []
    while pos < end:
        if not all_rules:
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
