"""Channel length measurement: the boundaries where a message costs a segment more or is refused."""

from __future__ import annotations

import pytest

from dispatcher.render.textfit import (
    ELLIPSIS,
    gsm_fold,
    gsm_transliterate,
    shorten,
    sms_encoding,
    sms_segments,
    tweet_length,
)

URL = "https://status.example.com/incidents/42/with/a/rather/long/path"


# --- SMS encoding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Example Cloud: checkout is down. https://status.example.com/i/1",
        "Grüße aus Köln, señor! Δ Ω £ ¥ § ¿ ¡ Ç",
        "Extension: € [ ] { } ^ ~ \\ |",
        "line one\nline two\r\n",
    ],
)
def test_gsm7_text_is_detected(text: str) -> None:
    assert sms_encoding(text) == "GSM-7"


@pytest.mark.parametrize(
    "char",
    ["\u2019", "\u201c", "\u2014", "\u2026", "\u00e7", "\u00e1", "\t", "\U0001f600", "\u4f60", "`"],
)
def test_one_non_gsm_character_makes_the_whole_message_ucs2(char: str) -> None:
    assert sms_encoding("Plain text " + char + " more plain text") == "UCS-2"


# --- SMS segments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "segments"),
    [(0, 1), (1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm7_segment_boundaries(length: int, segments: int) -> None:
    assert sms_segments("a" * length) == segments


@pytest.mark.parametrize(
    ("length", "segments"), [(70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)]
)
def test_ucs2_segment_boundaries(length: int, segments: int) -> None:
    assert sms_segments("\u0436" * length) == segments


def test_extension_characters_count_two_septets() -> None:
    assert sms_segments("\u20ac" * 80) == 1  # 160 septets
    assert sms_segments("\u20ac" * 81) == 2  # 162 septets
    assert sms_segments("a" * 159 + "[") == 2  # 161 septets


def test_extension_character_is_never_split_across_parts() -> None:
    # 306 septets would be two parts, but the "€" pair cannot straddle the first boundary.
    assert sms_segments("a" * 152 + "\u20ac" + "a" * 152) == 3


def test_emoji_counts_two_utf16_units() -> None:
    assert sms_segments("\U0001f600" * 35) == 1  # 70 units
    assert sms_segments("\U0001f600" * 36) == 2  # 72 units
    assert sms_segments("a" * 69 + "\U0001f600") == 2  # 71 units


def test_surrogate_pair_is_never_split_across_parts() -> None:
    # 134 units fit two parts exactly, but the emoji cannot start at unit 67 of the first.
    assert sms_segments("a" * 66 + "\U0001f600" + "a" * 66) == 3


def test_transliteration_keeps_typographic_text_in_gsm7() -> None:
    text = "We\u2019re on it \u2014 \u201cpayments\u201d fail\u2026\u00a0retry\tlater"
    folded = gsm_transliterate(text)
    assert folded == 'We\'re on it - "payments" fail... retry later'
    assert sms_encoding(folded) == "GSM-7"


def test_transliteration_leaves_letters_alone() -> None:
    assert gsm_transliterate("Łódź \u4f60\u597d") == "Łódź \u4f60\u597d"


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        (
            "Card payments fail \U0001f61e for some customers",
            "Card payments fail for some customers",
        ),
        ("Łódź, São Paulo, Kraków", "Lodz, Sao Paulo, Krakow"),
        ("Grüße, café, Ñandú", "Grüße, café, Ñandu"),  # GSM-7 has ü ß é Ñ, not ú
        ("\U0001f468\u200d\U0001f469\u200d\U0001f467 family \U0001f1e9\U0001f1ea", "family"),
        ("1\ufe0f\u20e3 step, \u00bd done \u2122", "1 step, 1/2 done TM"),
        ("We\u2019re on it \u2014 30\u00d72", "We're on it - 30x2"),
        ("\U0001f525\nline two \U0001f525", "\nline two"),
    ],
)
def test_folding_keeps_every_word_in_gsm7(text: str, folded: str) -> None:
    result = gsm_fold(text)
    assert result == folded
    assert sms_encoding(result) == "GSM-7"


@pytest.mark.parametrize("text", ["\u6c7a\u6e08", "Привет", "₹500 refund"])
def test_folding_refuses_what_would_lose_a_word(text: str) -> None:
    assert gsm_fold(text) is None


# --- X weighted length --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("", 0),
        ("hello", 5),
        ("a" * 280, 280),
        (URL, 23),
        ("http://example.com", 23),
        ("see " + URL + ".", 4 + 23 + 1),  # the full stop is not part of the link
        ("(" + URL + ")", 1 + 23 + 1),
        (URL + " and " + URL, 23 + 5 + 23),
        ("\U0001f600", 2),
        ("\u4f60\u597d", 4),  # CJK weighs 2
        ("caf\u0065\u0301", 4),  # NFC: e + combining acute is one code point, weight 1
        ("\u2014\u2019", 2),  # general punctuation is in the weight-1 ranges
        ("\u00e9t\u00e9", 3),  # Latin-1 letters weigh 1
    ],
)
def test_tweet_length(text: str, length: int) -> None:
    assert tweet_length(text) == length


def test_bare_domain_counts_at_least_a_link() -> None:
    assert tweet_length("status.io") == 23
    assert tweet_length("see example.com/" + "x" * 40) == 4 + len("example.com/") + 40


def test_link_without_a_real_tld_counts_its_characters() -> None:
    assert tweet_length("http://localhost:8000/incidents/1") == len(
        "http://localhost:8000/incidents/1"
    )


def test_emoji_sequences_are_never_counted_short() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert tweet_length(family) >= 2
    assert tweet_length("\U0001f1e9\U0001f1ea") >= 2


# --- shorten ------------------------------------------------------------------------------------


def test_text_that_fits_is_returned_unchanged() -> None:
    assert shorten("  Payments fail  ", lambda _: True) == "Payments fail"


def test_shortens_at_a_word_boundary_with_gsm_dots() -> None:
    result = shorten("Payments fail for some cards today", lambda text: len(text) <= 20)
    assert result == "Payments fail for..."
    assert result.endswith(ELLIPSIS)


def test_dangling_punctuation_is_dropped_before_the_dots() -> None:
    assert shorten("Payments fail, retry later", lambda text: len(text) <= 17) == "Payments fail..."


def test_nothing_fits_gives_empty() -> None:
    assert shorten("Payments fail", lambda text: len(text) <= 3) == ""
    assert shorten("", lambda _: False) == ""


@pytest.mark.parametrize("limit", range(len(URL) + 30))
def test_shorten_never_cuts_a_url(limit: int) -> None:
    text = f"Read {URL} for details on what happened today"
    result = shorten(text, lambda candidate: len(candidate) <= limit)
    assert len(result) <= limit
    if "http" in result:
        assert URL in result
        assert URL + "." not in result  # the dots never stick to the link


def test_a_kept_link_at_the_end_is_separated_from_the_dots() -> None:
    text = f"Details: {URL} and more words after it"
    result = shorten(text, lambda candidate: len(candidate) <= len(URL) + 14)
    assert result == f"Details: {URL} {ELLIPSIS}"


def test_links_cut_off_with_their_words_follow_the_dots() -> None:
    text = f"Card payments fail, see {URL} for the workaround and our progress today"
    result = shorten(text, lambda candidate: len(candidate) <= len(URL) + 24)
    assert result == f"Card payments fail... {URL}"


def test_the_links_alone_are_kept_when_no_word_fits_beside_them() -> None:
    text = f"Card payments fail, see {URL} and {URL}/2 for more"
    result = shorten(text, lambda candidate: len(candidate) <= 2 * len(URL) + 4)
    assert result == f"{URL} {URL}/2"


def test_links_can_be_given_up_when_asked() -> None:
    text = f"Card payments fail, see {URL} for the workaround"
    result = shorten(text, lambda candidate: len(candidate) <= 30, keep_links=False)
    assert result == "Card payments fail, see..."


def test_a_lone_link_is_never_cut_between_characters() -> None:
    assert shorten(URL + " tail", lambda candidate: len(candidate) <= 20) == ""


def test_text_without_spaces_is_cut_between_characters() -> None:
    text = "\u6c7a\u6e08\u30a8\u30e9\u30fc\u304c\u767a\u751f\u3057\u3066\u3044\u307e\u3059"
    result = shorten(text, lambda candidate: len(candidate) <= 8)
    assert result == text[:5] + ELLIPSIS


def test_shorten_uses_few_fit_checks() -> None:
    calls: list[str] = []

    def fits(text: str) -> bool:
        calls.append(text)
        return len(text) <= 300

    shorten("word " * 1000, fits)
    assert len(calls) <= 15  # binary search, not one render per word
