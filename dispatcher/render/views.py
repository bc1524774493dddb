"""What templates read: an incident, its update and a recipient, and the message they become.

Plain frozen values rather than the store's rows: a template cannot reach the database through
them, the fitting loop shortens a title or a message with `dataclasses.replace` without touching
the incident itself, and a preview or a check (`samples.py`) builds them without a store. Every
other render module works on these shapes; this one imports none of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from dispatcher.models import IncidentState, Severity


@dataclass(frozen=True)
class IncidentView:
    """An incident as templates see it. For a scheduled maintenance `started_at` is the planned
    start (and the update's `eta` its planned end)."""

    id: int
    title: str
    severity: Severity
    state: IncidentState
    components: tuple[str, ...]
    started_at: datetime
    resolved_at: datetime | None
    url: str  # the incident's status page link, in every message
    # Not on the public page: each recipient's link leads to their own page (RecipientView).
    private: bool = False

    @property
    def title_names_components(self) -> bool:
        """Whether the title already names every component, as a monitoring source's default
        title does ("Disruption affecting general"): then a sentence does not name them again
        after it. Case does not matter; a component must appear as a whole word or words."""
        title = self.title.casefold()
        return bool(self.components) and all(
            re.search(rf"(?<!\w){re.escape(component.casefold())}(?!\w)", title)
            for component in self.components
        )


@dataclass(frozen=True)
class EarlierUpdate:
    """An update sent before this one, for a recipient who hears of the incident only now."""

    state: IncidentState
    message: str | None
    created_at: datetime


@dataclass(frozen=True)
class UpdateView:
    """The update being announced; `message` is the operator's free text, if any, and
    `credit_note` the service credit offered with a resolution. A post-incident review
    (`milestone` "postmortem") has the address of the review instead (`review_url`). Two parts
    are for some recipients only: `note`, the update's notes for the segments this recipient
    is in ("Your account manager will call you"), and `story`, the earlier updates, for one
    told of the incident for the first time (its scope widened to them). Both are left out
    first when a channel's text does not fit (fitting.py)."""

    id: int
    state: IncidentState
    message: str | None
    created_at: datetime
    next_update_at: datetime | None = None
    eta: datetime | None = None
    credit_note: str | None = None
    milestone: str | None = None
    review_url: str | None = None
    feedback_url: str | None = None  # the survey a resolution asks for (set by `render`)
    note: str | None = None
    story: tuple[EarlierUpdate, ...] = ()

    @property
    def topic(self) -> str:
        """What the message is about, which names its templates (`<topic>.<part>.j2`): the
        state, or the post-incident review, which is not a second "resolved"."""
        return "postmortem" if self.milestone == "postmortem" else str(self.state)


@dataclass(frozen=True)
class RecipientView:
    """Whom a message is for; the renderer receives None for a broadcast (the social post)."""

    name: str
    locale: str
    manage_url: str | None = None
    unsubscribe_url: str | None = None
    timezone: str = "UTC"  # IANA name; times in messages are shown in it (unknown names: UTC)
    page_url: str | None = None  # their private status page (the incidents that concern them)


@dataclass(frozen=True)
class Rendered:
    """A message ready for a channel: text always; subject/html for email; payload for webhooks."""

    text: str
    subject: str | None = None
    html: str | None = None
    payload: dict[str, object] | None = None
