"""What makes a large fan-out fast must not change what anyone receives.

- a message rendered once and personalised (`render_shared`) is the message `render` makes for
  that recipient;
- email goes out as one SendGrid request for many recipients, each with their own name and
  links (the sandbox applies SendGrid's `substitutions` as the real service does);
- the fan-out hands on its batches as it writes them: the public post first, key accounts
  before everyone else, every row once.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dispatcher.delivery import fanout
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.registry import ChannelRegistry
from dispatcher.incidents import lifecycle
from dispatcher.links import LinkPurpose
from dispatcher.models import IncidentIn, IncidentState, Severity, SubscriberIn
from dispatcher.render.messages import render
from dispatcher.render.shared import render_shared
from dispatcher.render.views import IncidentView, RecipientView, UpdateView
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings
from dispatcher.subscribers import records

NOW = datetime(2025, 5, 14, 14, 5, tzinfo=UTC)
INCIDENT = IncidentView(
    1, "API <errors> & more", Severity.CRITICAL, IncidentState.INVESTIGATING, ("api",), NOW, None,
    "https://status.example.com/incidents/1",
)  # fmt: skip
RECIPIENTS = [
    RecipientView("Ada  Lovelace", "en", "https://s.example/preferences/a.b-_1", "https://s/u/1"),
    RecipientView("Jürgen", "de", "https://s.example/preferences/q", None, "Europe/Berlin"),
    RecipientView("", "en", None, None),
    RecipientView("Zoë “Z” O\u2019Neil", "de-AT", "https://s/p/2", "https://s/u/2", "Asia/Kolkata"),
]


@pytest.mark.parametrize("channel", ["sms", "email", "webhook"])
@pytest.mark.parametrize("state", [IncidentState.INVESTIGATING, IncidentState.RESOLVED])
@pytest.mark.parametrize("recipient", RECIPIENTS, ids=lambda r: r.name or "no name")
def test_a_shared_render_personalised_is_the_recipients_own_render(
    channel: str, state: IncidentState, recipient: RecipientView
) -> None:
    limits = ChannelRegistry(Settings(sandbox_url="http://sandbox")).factory(channel).limits
    update = UpdateView(1, state, "Something “broke”  &  <badly>", NOW)
    options = {"company_name": "Example", "support_url": None, "sms_max_segments": 2}
    shared = render_shared(channel, limits, INCIDENT, update, recipient, **options)  # type: ignore[arg-type]
    assert shared is not None
    assert shared.personal(recipient) == render(
        channel,
        limits,
        INCIDENT,
        update,
        recipient,
        **options,  # type: ignore[arg-type]
    )


def test_a_name_is_escaped_in_the_html_it_is_substituted_into() -> None:
    limits = ChannelRegistry(Settings(sandbox_url="http://sandbox")).factory("email").limits
    update = UpdateView(1, IncidentState.INVESTIGATING, None, NOW)
    person = RecipientView("<b>Eve</b> & co", "en", "https://s/p/1", "https://s/u/1")
    shared = render_shared(
        "email", limits, INCIDENT, update, person, company_name="E", support_url=None,
        sms_max_segments=2,
    )  # fmt: skip
    assert shared is not None
    personal = shared.personal(person)
    assert "Hi <b>Eve</b> & co," in personal.text
    assert personal.html is not None
    assert "&lt;b&gt;Eve&lt;/b&gt; &amp; co" in personal.html
    assert "<b>Eve</b>" not in personal.html


def add(pipeline: Pipeline, name: str, **fields: object) -> int:
    data = SubscriberIn.model_validate({"confirmed": True, "name": name, **fields})
    return records.add(pipeline.store, pipeline.registry, data).id


def test_email_to_many_is_one_request_and_each_gets_their_own_links(
    pipeline: Pipeline, sandbox: Sandbox
) -> None:
    ids = {
        add(pipeline, f"Person {n}", email=f"p{n}@example.org", channels=["email"]): n
        for n in range(5)
    }
    posted = lifecycle.open_incident(
        pipeline.store,
        IncidentIn(title="API errors", severity=Severity.MAJOR, components=["api"]),
    )
    pipeline.announce(posted.update_id, wait_s=0)

    assert sandbox.stats()["requests"]["email"] == 1
    emails = sandbox.messages("email")
    assert len(emails) == 5
    for subscriber_id, n in ids.items():
        (mail,) = [m for m in emails if m["to"] == f"p{n}@example.org"]
        # Their own link (a token signed at send time, so read it back rather than remake it:
        # remade a second later its timestamp would differ), the same in every place.
        unsubscribe = mail["meta"]["mail_headers"]["List-Unsubscribe"].strip("<>")
        prefix = f"{pipeline.links.public_url}/unsubscribe/"
        assert unsubscribe.startswith(prefix)
        claims = pipeline.links.read(LinkPurpose.UNSUBSCRIBE, unsubscribe.removeprefix(prefix))
        assert claims.subscriber_id == subscriber_id
        assert f"Hi Person {n}," in mail["body"]
        assert f"Unsubscribe: {unsubscribe}" in mail["body"]
        assert f'href="{unsubscribe}"' in mail["html"]
        assert "%outage_" not in mail["body"] + mail["html"] + mail["subject"]


def test_the_fan_out_hands_on_the_public_post_first_then_key_accounts(
    pipeline: Pipeline,
) -> None:
    for n in range(30):
        add(pipeline, f"s{n}", email=f"s{n}@example.org", channels=["email"], tier=n % 10 == 7)
    posted = lifecycle.open_incident(
        pipeline.store,
        IncidentIn(title="API errors", severity=Severity.CRITICAL, components=["api"]),
    )
    batches = list(fanout.fan_out(pipeline.store, pipeline.registry, posted.update_id, 200))

    by_id = fanout_rows(pipeline, posted.update_id)
    assert [by_id[i][0] for i in batches[0]] == ["social"]
    assert {by_id[i][1] for i in batches[1]} == {13}  # tier 1, critical
    assert len(batches[1]) == 3
    written = [i for batch in batches for i in batch]
    assert sorted(written) == sorted(by_id) and len(written) == len(set(written)) == 31
    # Run again (a redelivered task): nothing new is written, what is queued is handed on again.
    again = list(fanout.fan_out(pipeline.store, pipeline.registry, posted.update_id, 200))
    assert sorted(i for batch in again for i in batch) == sorted(by_id)
    assert fanout_rows(pipeline, posted.update_id) == by_id


def fanout_rows(pipeline: Pipeline, update_id: int) -> dict[int, tuple[str, int]]:
    from sqlalchemy import select

    from dispatcher.store import Delivery

    with pipeline.store.session() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.channel, Delivery.priority).where(
                Delivery.update_id == update_id
            )
        ).all()
    return {row[0]: (row[1], row[2]) for row in rows}
