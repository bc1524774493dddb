"""The templates, and finding the one for a channel, language, state and part.

Templates live in `templates/<channel>/<locale>/<state>.<part>.j2` (part: `text` everywhere,
`subject` and `html` for email); `_`-prefixed files are layouts and shared phrases. A locale
without a template falls back to English, so a new language is only new files. One Jinja
environment holds them all (the subscriber pages and confirmations use it too), compiled at
start by `compile_templates` so that a broken one is found before the first incident.

What can go wrong is a template's fault, not the provider's, and so is permanent::

    RenderError (ValueError)      this update cannot be rendered for this channel; do not retry
    └── TemplateMissing           no template for this channel/state (in any fallback locale)

Jinja's own errors, raised while looking a template up or rendering it, become these here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Final

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    select_autoescape,
)

from dispatcher.errors import OutageError
from dispatcher.render.calendar import clock, window
from dispatcher.render.views import RecipientView
from dispatcher.settings import templates_dir

DEFAULT_LOCALE: Final = "en"
STATUS_PAGES = "web/status/"  # compiled by their own environment (dispatcher/web/status.py)
_LANGUAGE: Final = re.compile(r"[a-z]{2,3}")


class RenderError(OutageError, ValueError):
    """This update cannot become a message on this channel; retrying will not change that."""

    def __init__(self, channel: str, state: str, reason: str) -> None:
        self.channel = channel
        self.state = state
        self.reason = reason
        super().__init__(f"{channel}/{state}: {reason}")


class TemplateMissing(RenderError):
    """No template for this channel, state and part, neither in the locale nor in English."""

    def __init__(self, channel: str, state: str, part: str, tried: list[str]) -> None:
        self.part = part
        self.tried = tried
        super().__init__(
            channel,
            state,
            f"no {part} template (looked for {', '.join(tried)} in {templates_dir()})",
        )


@cache
def environment() -> Environment:
    """The one Jinja environment. `html.j2` must be listed: select_autoescape matches the end of
    the name, and "x.html.j2" does not end in ".html", so ["html"] alone would escape nothing."""
    env = Environment(
        loader=FileSystemLoader(templates_dir()),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2")),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters.update(clock=clock, window=window, sentence=sentence)
    return env


def compile_templates() -> dict[str, str]:
    """Compile every template now (the environment keeps them); the ones that do not compile,
    with why. A worker that compiled them on its first message made the first incident after a
    deploy, when a second matters most, wait for it; and a broken template is found at start."""
    env = environment()
    broken: dict[str, str] = {}
    for name in env.list_templates(extensions=["j2"]):
        if name.startswith(STATUS_PAGES):
            continue
        try:
            env.get_template(name)
        except TemplateError as exc:
            broken[name] = str(exc)
    return broken


def language_of(recipient: RecipientView | None) -> str:
    """The template language of a recipient; a broadcast has none, so it uses the default."""
    return DEFAULT_LOCALE if recipient is None else language_code(recipient.locale)


def language_code(locale: str) -> str:
    """The language of a locale: "de-DE", "de_DE" or "de" means "de"; the default for anything
    that is not a plain language code."""
    language = locale.replace("_", "-").split("-", 1)[0].lower()
    return language if _LANGUAGE.fullmatch(language) else DEFAULT_LOCALE


def template(channel: str, language: str, state: str, part: str) -> Template:
    """The template for this part, in `language` or else in English."""
    names = list(
        dict.fromkeys(
            f"{channel}/{locale}/{state}.{part}.j2" for locale in (language, DEFAULT_LOCALE)
        )
    )
    try:
        return environment().select_template(names)
    except TemplateNotFound:
        raise TemplateMissing(channel, state, part, names) from None
    except TemplateError as exc:
        raise RenderError(channel, state, f"broken {part} template: {exc}") from exc


def template_language(found: Template, wanted: str) -> str:
    """The locale folder the template was found in: `wanted`, or English after a fallback."""
    parts = (found.name or "").split("/")
    return parts[1] if len(parts) > 2 else wanted


@contextmanager
def template_errors(channel: str, state: str, part: str) -> Iterator[None]:
    """Turn errors raised while rendering (a missing layout, an undefined name) into ours."""
    try:
        yield
    except TemplateNotFound as exc:
        raise TemplateMissing(channel, state, part, [str(exc)]) from None
    except TemplateError as exc:
        raise RenderError(channel, state, f"{part} template failed: {exc}") from exc


def sentence(text: str) -> str:
    """Upper-case the first letter, for a name that starts a sentence ("checkout" -> "Checkout")."""
    return text[:1].upper() + text[1:]
