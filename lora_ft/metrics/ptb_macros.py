"""The macros of CoreNLP 3.4.1's ``PTBLexer.flex`` as Python regular expressions: the vocabulary of the scanner
rules in :mod:`lora_ft.metrics.ptb_tokenizer` (how they were ported and checked is written there).

JFlex syntax translated to Python; ``%caseless`` applies to literals only. The names keep the .flex file's macro names
(``_WORD`` is ``{WORD}``) so the two can be read side by side; they are the tokenizer's internals, not an API.
"""

from __future__ import annotations

import re


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
