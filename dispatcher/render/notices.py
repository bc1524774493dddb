"""Messages of no update, to one address of one subscriber: a confirmation ("is this your
address?", dispatcher/subscribers/confirmations.py) and a new preference link
(dispatcher/subscribers/new_link.py).

Each is one folder of templates, `templates/<folder>/<language>/`: an email's subject, text and
HTML, and an SMS's text (GSM-7 only, so its length is predictable), in the subscriber's
language or else English. What goes in them is the caller's `context`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from jinja2 import Template

from channels.base import Limits, Message
from dispatcher.render.templates import DEFAULT_LOCALE, environment, language_of
from dispatcher.render.textfit import gsm_transliterate
from dispatcher.render.views import RecipientView


class Addressee(Protocol):
    """What a notice reads of its subscriber: an ORM row or a claimed one."""

    @property
    def id(self) -> int: ...
    @property
    def link_secret(self) -> str | None: ...
    @property
    def name(self) -> str: ...
    @property
    def locale(self) -> str: ...


def compose(
    folder: str,
    limits: Limits,
    key: int,
    subscriber: Addressee,
    address: str,
    context: Mapping[str, object],
    *,
    unsubscribe_url: str | None = None,
) -> Message:
    """The notice of `folder` to `address`, in the subscriber's language: an email with a
    subject and HTML (and one-click unsubscribe) where the channel has subjects, else one SMS."""
    language = language_of(RecipientView(name=subscriber.name, locale=subscriber.locale))
    if limits.has_subject:
        return Message(
            key=key,
            to=address,
            subject=" ".join(_template(folder, language, "email.subject").render(context).split()),
            text=_template(folder, language, "email.text").render(context).strip(),
            html=_template(folder, language, "email.html").render(context).strip(),
            unsubscribe_url=unsubscribe_url,
        )
    sms_context = {**context, "company": gsm_transliterate(str(context["company"]))}
    text = " ".join(_template(folder, language, "sms.text").render(sms_context).split())
    return Message(key=key, to=address, text=text)


def sms_text(folder: str, locale: str, part: str, company: str) -> str:
    """One SMS of `folder` in the language of `locale` (English otherwise), GSM-7 only: e.g.
    the answer to the YES that confirmed a number."""
    language = language_of(RecipientView(name="", locale=locale))
    text = _template(folder, language, part).render(company=gsm_transliterate(company))
    return " ".join(text.split())


def _template(folder: str, language: str, part: str) -> Template:
    names = [f"{folder}/{language}/{part}.j2", f"{folder}/{DEFAULT_LOCALE}/{part}.j2"]
    return environment().select_template(list(dict.fromkeys(names)))
