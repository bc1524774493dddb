"""Measuring text the way each channel's provider counts it, and cutting it to fit.

A message that is one character too long is not "slightly long": an SMS becomes a third billed
segment, a post to X is refused outright. So the renderer measures with the providers' own rules:

- SMS (GSM 03.38 / 3GPP TS 23.038): GSM-7 when every character is in the basic set or its
  extension table (extension characters take two septets), otherwise UCS-2 counted in UTF-16 code
  units. A single curly quote turns a 160-character message into a three-segment one, which is
  why `gsm_transliterate` exists; an emoji or an "ł" does the same, which is why `gsm_fold` does.
- X (twitter-text v3 weighting): links count 23, code points in a few Latin/punctuation ranges
  weigh 1, everything else 2. Where our count can differ from X's it errs long, never short.

Everything here is a pure function of its input.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Final, Literal

SmsEncoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38 basic character set (ESC, 0x1B, left out: it is not text, it introduces the extension).
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each character is sent as ESC + code, so it costs two septets.
GSM7_EXTENSION: Final = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE: Final = 160  # septets in a message sent as one segment
GSM7_PART: Final = 153  # septets per part once concatenated (the rest is the UDH)
UCS2_SINGLE: Final = 70  # UTF-16 code units in one segment
UCS2_PART: Final = 67  # UTF-16 code units per concatenated part

TWEET_URL_WEIGHT: Final = 23  # every link is wrapped in t.co and counted at this weight
TWEET_MAX_WEIGHT: Final = 280
# twitter-text v3: code points in these inclusive ranges weigh 1, all others 2.
_TWEET_LIGHT_RANGES: Final = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))

ELLIPSIS: Final = "..."  # three dots, not "…": the single character is not in GSM-7

# Typographic characters that word processors and chat apps put into operators' messages, mapped
# to GSM-7 look-alikes so that one pasted apostrophe does not halve an SMS's capacity.
_GSM_LOOKALIKES: Final[dict[int, str]] = str.maketrans(
    {
        "\u2018": "'",  # left single quotation mark
        "\u2019": "'",  # right single quotation mark / apostrophe
        "\u201a": "'",  # single low-9 quotation mark
        "\u201b": "'",  # single high-reversed-9 quotation mark
        "\u2032": "'",  # prime
        "\u00b4": "'",  # acute accent
        "`": "'",  # grave accent is not in GSM-7 either
        "\u201c": '"',  # left double quotation mark
        "\u201d": '"',  # right double quotation mark
        "\u201e": '"',  # double low-9 quotation mark
        "\u2033": '"',  # double prime
        "\u00ab": '"',  # left guillemet
        "\u00bb": '"',  # right guillemet
        "\u2010": "-",  # hyphen
        "\u2011": "-",  # non-breaking hyphen
        "\u2012": "-",  # figure dash
        "\u2013": "-",  # en dash
        "\u2014": "-",  # em dash
        "\u2015": "-",  # horizontal bar
        "\u2212": "-",  # minus sign
        "\u2026": ELLIPSIS,  # horizontal ellipsis
        "\u2022": "-",  # bullet
        "\t": " ",  # tab is not in GSM-7
        "\u00a0": " ",  # no-break space
        "\u2009": " ",  # thin space
        "\u202f": " ",  # narrow no-break space
        "\u200b": "",  # zero-width space
        "\ufeff": "",  # byte order mark / zero-width no-break space
    }
)

# A link with its scheme; trailing punctuation is trimmed afterwards, as twitter-text does.
_SCHEME_URL: Final = re.compile(r"https?://[^\s<>\"]+", re.IGNORECASE)
# A bare domain-like token ("example.com/path"); X may or may not link it (it checks the TLD).
_BARE_DOMAIN: Final = re.compile(
    r"(?<![\w@./:-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}(?::\d+)?(?:/[^\s<>\"]*)?",
    re.IGNORECASE,
)
_URL_TRAILING_PUNCTUATION: Final = ".,:;!?'\")]}>"
_HOST_END: Final = re.compile(r"[/:?#]")
_TOKEN: Final = re.compile(r"\S+")
_SPACES: Final = re.compile(" {2,}")
_CUT_PUNCTUATION: Final = ".,;:!?-([{'\"/ \n\t"


def gsm_transliterate(text: str) -> str:
    """Replace typographic punctuation by GSM-7 look-alikes; leave real letters untouched.

    Only punctuation and spaces are folded, always: a name with "ł" or a message in Japanese
    legitimately needs UCS-2. Letters are `gsm_fold`'s, and only where that saves segments.
    """
    return unicodedata.normalize("NFC", text).translate(_GSM_LOOKALIKES)


# Letters and signs with no decomposition into GSM-7 characters, and their usual spelling.
_GSM_FOLDS: Final[dict[str, str]] = {
    "\u0142": "l",  # latin small letter l with stroke
    "\u0141": "L",  # latin capital letter l with stroke
    "\u0111": "d",  # latin small letter d with stroke
    "\u0110": "D",  # latin capital letter d with stroke
    "\u0127": "h",  # latin small letter h with stroke
    "\u0126": "H",  # latin capital letter h with stroke
    "\u0131": "i",  # latin small letter dotless i
    "\u0153": "oe",  # latin small ligature oe
    "\u0152": "OE",  # latin capital ligature oe
    "\u00fe": "th",  # latin small letter thorn
    "\u00de": "Th",  # latin capital letter thorn
    "\u00f0": "d",  # latin small letter eth
    "\u00d0": "D",  # latin capital letter eth
    "\u014b": "n",  # latin small letter eng
    "\u017f": "s",  # latin small letter long s
    "\u0138": "k",  # latin small letter kra
    "\u0140": "l",  # latin small letter l with middle dot
    "\u013f": "L",  # latin capital letter l with middle dot
    "\u00a9": "(c)",  # copyright sign
    "\u00ae": "(R)",  # registered sign
    "\u00d7": "x",  # multiplication sign
    "\u00f7": "/",  # division sign
    "\u00b1": "+/-",  # plus-minus sign
    "\u2264": "<=",  # less-than or equal to
    "\u2265": ">=",  # greater-than or equal to
    "\u2260": "!=",  # not equal to
    "\u2192": "->",  # rightwards arrow
    "\u2190": "<-",  # leftwards arrow
    "\u2044": "/",  # fraction slash
    "\u00b7": ".",  # middle dot
    "\u2039": "<",  # single left-pointing angle quotation mark
    "\u203a": ">",  # single right-pointing angle quotation mark
}
# What may be dropped without losing a word: emoji and other symbols (So), their modifiers
# (Sk: skin tones), joiners and variation selectors (Cf, Mn), keycaps (Me), private use (Co).
_GSM_DROPPABLE: Final = frozenset({"So", "Sk", "Cf", "Mn", "Me", "Co"})


def gsm_fold(text: str) -> str | None:
    """`text` in GSM-7 characters with its words kept, or None when that cannot be done.

    Accented letters lose their accents where GSM-7 has no such letter ("ó" -> "o", "ł" -> "l"),
    emoji and other symbols are dropped, unknown punctuation too. A letter or a number with no
    GSM-7 spelling (Cyrillic, Chinese, "₹") cannot be folded without losing words: None, and the
    text stays as it is (UCS-2). The caller decides whether folding is worth it: an SMS is
    folded only when that makes it fewer segments (dispatcher/render/fitting.py)."""
    folded: list[str] = []
    for char in gsm_transliterate(text):
        spelled = _gsm_char(char)
        if spelled is None:
            return None
        folded.append(spelled)
    return "\n".join(_single_spaced(line) for line in "".join(folded).split("\n"))


def _gsm_char(char: str) -> str | None:
    """One character in GSM-7: itself, its usual spelling, its base letter, nothing, or None."""
    if char in GSM7_BASIC or char in GSM7_EXTENSION:
        return char
    if char in _GSM_FOLDS:
        return _GSM_FOLDS[char]
    decomposed = unicodedata.normalize("NFKD", char)
    if decomposed != char:
        parts = [_gsm_char(part) for part in decomposed]
        if all(part is not None for part in parts) and any(parts):
            return "".join(part for part in parts if part)
    digit = unicodedata.decimal(char, None)
    if digit is not None:
        return str(digit)
    category = unicodedata.category(char)
    if char.isspace():
        return "\n" if category in ("Zl", "Zp") else " "
    if category in _GSM_DROPPABLE or category.startswith("P"):
        return ""
    return None


def _single_spaced(line: str) -> str:
    """A dropped emoji leaves no double space behind, nor one at either end of a line."""
    return _SPACES.sub(" ", line).strip(" ")


def sms_encoding(text: str) -> SmsEncoding:
    """The encoding a carrier uses for `text`: GSM-7 if every character has a GSM code."""
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text):
        return "GSM-7"
    return "UCS-2"


def sms_segments(text: str) -> int:
    """How many segments (billed messages) `text` is sent as; an empty text still is one.

    Parts are packed greedily, never splitting an extension character's two septets or a UTF-16
    surrogate pair across parts, as phones and providers do; so a count can exceed the naive
    ceil(length / 153).
    """
    if sms_encoding(text) == "GSM-7":
        units = [2 if char in GSM7_EXTENSION else 1 for char in text]
        return _pack(units, GSM7_SINGLE, GSM7_PART)
    units = [2 if ord(char) > 0xFFFF else 1 for char in text]
    return _pack(units, UCS2_SINGLE, UCS2_PART)


def _pack(units: Sequence[int], single: int, part: int) -> int:
    """Segments needed for characters of the given unit sizes: one if all fit, else packed parts."""
    if sum(units) <= single:
        return 1
    parts, used = 1, 0
    for size in units:
        if used + size > part:
            parts, used = parts + 1, 0
        used += size
    return parts


def tweet_length(text: str) -> int:
    """The weighted length X checks against 280 (twitter-text v3), after NFC normalisation.

    Links with a scheme and an alphabetic top-level domain count 23 whatever their length. Two
    deliberate over-estimates keep us from posting something X rejects: a bare domain counts the
    larger of 23 and its own weight (X links it only if it knows the TLD), and a multi-code-point
    emoji sequence (flags, ZWJ families, skin tones) counts per code point where X counts 2.
    """
    text = unicodedata.normalize("NFC", text)
    total, position = 0, 0
    for start, end, weight in _links(text):
        total += _weight(text[position:start]) + weight
        position = end
    return total + _weight(text[position:])


def _links(text: str) -> list[tuple[int, int, int]]:
    """(start, end, weight) of each link in `text`, in order, not overlapping."""
    found: list[tuple[int, int, int]] = []
    for match in _SCHEME_URL.finditer(text):
        url = match.group().rstrip(_URL_TRAILING_PUNCTUATION)
        weight = TWEET_URL_WEIGHT if _has_alphabetic_tld(url) else _weight(url)
        found.append((match.start(), match.start() + len(url), weight))
    for match in _BARE_DOMAIN.finditer(text):
        start = match.start()
        if any(link_start <= start < link_end for link_start, link_end, _ in found):
            continue
        bare = match.group().rstrip(_URL_TRAILING_PUNCTUATION)
        found.append((start, start + len(bare), max(TWEET_URL_WEIGHT, _weight(bare))))
    return sorted(found)


def _has_alphabetic_tld(url: str) -> bool:
    """Whether X would link this URL: its host ends in a letters-only label (no IP, localhost)."""
    host = _HOST_END.split(url.split("://", 1)[1], maxsplit=1)[0]
    labels = host.rsplit(".", 1)
    return len(labels) == 2 and labels[0] != "" and len(labels[1]) >= 2 and labels[1].isalpha()


def _weight(text: str) -> int:
    return sum(1 if _is_light(ord(char)) else 2 for char in text)


def _is_light(code_point: int) -> bool:
    return any(low <= code_point <= high for low, high in _TWEET_LIGHT_RANGES)


def shorten(text: str, fits: Callable[[str], bool], *, keep_links: bool = True) -> str:
    """The longest word-boundary prefix of `text`, plus "...", that `fits`; "" if none does.

    `text` itself is returned when it fits. A link is one word, so it is never cut into a dead
    address, and with `keep_links` (the default) never lost either: the links of the words cut
    off follow the dots ("Payments fail... https://example.com/help"), and when no words fit
    beside them the links alone are the result. Text without spaces (Chinese, Japanese, one huge
    token) is cut between characters as a last resort, unless that token is a link. `fits` is
    assumed monotonic (a longer prefix never fits better), which lets the search be binary: each
    call usually renders a template.
    """
    text = text.strip()
    if not text or fits(text):
        return text
    count = len(text.split())
    best = longest(
        count - 1, lambda words: _fitting(first_words(text, words, keep_links=keep_links), fits)
    )
    if best:
        return first_words(text, best, keep_links=keep_links)
    first, *others = text.split()
    tail = links_in(" ".join(others)) if keep_links else []
    if not _is_link(first):

        def cut(chars: int) -> str:
            shortened = _with_ellipsis(_cut_chars(first, chars))
            return " ".join([shortened, *tail]) if shortened else ""

        chars = longest(len(first) - 1, lambda count: _fitting(cut(count), fits))
        if chars:
            return cut(chars)
    links = " ".join(links_in(text)) if keep_links else ""
    return links if links and fits(links) else ""


def first_words(text: str, words: int, *, keep_links: bool = True) -> str:
    """The first `words` words of `text` and "...", then (with `keep_links`) the links among
    the words cut off; `text` itself when it has no more words, "" when nothing of it is left
    (a prefix of punctuation). How `shorten` cuts, for a caller that counts words itself."""
    text = text.strip()
    ends = [match.end() for match in _TOKEN.finditer(text)]
    if words >= len(ends):
        return text
    if words <= 0:
        return ""
    cut_off = text[ends[words - 1] :].split()
    shortened = _with_ellipsis(text[: ends[words - 1]])
    kept = [word for word in cut_off if _is_link(word)] if keep_links else []
    return " ".join([shortened, *kept]) if shortened else ""


def longest(upper: int, ok: Callable[[int], bool]) -> int:
    """The largest n in 1..upper with ok(n), assuming ok is monotonic; 0 if there is none: a
    binary search, as each `ok` usually renders a template."""
    low, high = 0, upper
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _fitting(candidate: str, fits: Callable[[str], bool]) -> bool:
    return bool(candidate) and fits(candidate)


def _with_ellipsis(prefix: str) -> str:
    """`prefix` + "...", dropping dangling punctuation; a space first after a link, so the dots
    do not become part of the address."""
    last = prefix.rsplit(maxsplit=1)[-1] if prefix.strip() else ""
    if _is_link(last):
        return f"{prefix.rstrip()} {ELLIPSIS}"
    trimmed = prefix.rstrip(_CUT_PUNCTUATION)
    return f"{trimmed}{ELLIPSIS}" if trimmed else ""


def _cut_chars(word: str, count: int) -> str:
    """The first `count` characters of `word`, moved back so as not to orphan combining marks."""
    while 0 < count < len(word) and unicodedata.combining(word[count]):
        count -= 1
    return word[:count]


def links_in(text: str) -> list[str]:
    """The words of `text` that are links, in order (what `shorten` keeps)."""
    return [word for word in text.split() if _is_link(word)]


def _is_link(word: str) -> bool:
    return bool(_SCHEME_URL.search(word) or _BARE_DOMAIN.search(word))
