"""`outage template preview`: a template rendered with sample data, and the figures that decide
whether it fits its channel (SMS segments and encoding, X weighted length)."""

from __future__ import annotations

from dataclasses import replace

from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.models import IncidentState
from dispatcher.render.messages import render
from dispatcher.render.samples import sample
from dispatcher.render.textfit import sms_encoding, sms_segments, tweet_length
from dispatcher.settings import Settings


def preview(
    settings: Settings, channel: str, state: IncidentState, locale: str, message: str | None
) -> str:
    factory = ChannelRegistry(settings).factory(channel)
    incident, update, recipient = sample(state)
    if message is not None:
        update = replace(update, message=message)
    recipient = replace(recipient, locale=locale)
    rendered = render(
        channel,
        factory.limits,
        incident,
        update,
        None if factory.address_field is None else recipient,
        company_name=settings.company_name,
        support_url=settings.support_url,
        sms_max_segments=settings.sms_max_segments,
    )
    parts = []
    if rendered.subject is not None:
        parts.append(f"Subject: {rendered.subject}\n")
    parts.append(rendered.text)
    if rendered.html is not None:
        parts.append(f"\n--- HTML ({len(rendered.html)} characters) ---\n{rendered.html}")
    figures = f"{len(rendered.text)} characters"
    if factory.limits.max_sms_segments is not None:
        figures += f", {sms_segments(rendered.text)} SMS segment(s), {sms_encoding(rendered.text)}"
    if factory.limits.max_weighted_chars is not None:
        figures += f", X weighted length {tweet_length(rendered.text)}/280"
    parts.append(f"\n--- {figures} ---")
    return "\n".join(parts)
