"""What the subscriber pages say, in the subscriber's language: a small message catalogue.

The pages (templates/web/*.html.j2) and the modules behind them never hold a sentence of their
own; they ask `Words` for one by key, and the key's text comes from
`templates/web/<language>/words.toml` (a key a language lacks is said in English, so a new key
never breaks a page). Errors are keyed by the code of the rule that found them (`error.<code>`:
pydantic's error type, or the code of one of our own errors), never by parsing their English
text, which stays the operator's (CLI and API).

A page is in its subscriber's language; a page about a link that does not read (no subscriber
known yet) in the language the browser asks for first, of those we have.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from dispatcher.render.templates import DEFAULT_LOCALE, language_code
from dispatcher.settings import templates_dir


@dataclass(frozen=True)
class Words:
    """The catalogue of one language: `words("preferences.lead", name="Ada")`."""

    language: str
    entries: Mapping[str, str]

    def __call__(self, key: str, **values: object) -> str:
        return self.entries[key].format(**values)

    def has(self, key: str) -> bool:
        return key in self.entries


def words(locale: str) -> Words:
    """The catalogue for a subscriber's locale ("de-DE" reads German), English if we have none."""
    language = language_code(locale)
    return _catalogue(language if language in page_languages() else DEFAULT_LOCALE)


def from_header(accept_language: str | None) -> Words:
    """The catalogue of the first language the browser asks for (Accept-Language) that we have;
    English otherwise."""
    ranked: list[tuple[float, str]] = []
    for item in (accept_language or "").split(","):
        tag, _, parameters = item.strip().partition(";")
        quality = 1.0
        if parameters.strip().startswith("q="):
            try:
                quality = float(parameters.strip()[2:])
            except ValueError:
                continue
        if tag and tag != "*":
            ranked.append((quality, language_code(tag)))
    for _, language in sorted(ranked, key=lambda pair: -pair[0]):
        if language in page_languages():
            return _catalogue(language)
    return _catalogue(DEFAULT_LOCALE)


@cache
def page_languages() -> frozenset[str]:
    """The languages the pages are written in: a folder with a words.toml."""
    return frozenset(path.parent.name for path in (templates_dir() / "web").glob("*/words.toml"))


@cache
def _catalogue(language: str) -> Words:
    entries = dict(_read(DEFAULT_LOCALE))
    if language != DEFAULT_LOCALE:
        entries.update(_read(language))
    return Words(language, entries)


def _read(language: str) -> dict[str, str]:
    """One words.toml as flat keys: [preferences] title = ... is "preferences.title"."""
    with (templates_dir() / "web" / language / "words.toml").open("rb") as handle:
        sections = tomllib.load(handle)
    return {
        f"{section}.{key}": text
        for section, entries in sections.items()
        for key, text in entries.items()
    }
