"""The sign-up form's bot check (dispatcher/web/botcheck.py), through the real app: a script
that posts without the page, too fast, with an old or forged stamp, or into the honeypot, stores
and sends nothing; a person, without JavaScript, signs up as before. The clock is moved, never
waited for."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import time_machine
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner

from dispatcher.sandbox.server import Sandbox
from dispatcher.subscribers import records
from dispatcher.web import botcheck
from tests.test_status_page import post_form

ADA = {"name": "Ada", "email": "ada@example.org"}


def stored(client: TestClient) -> list[Any]:
    return records.list_all(client.app.state.pipeline.store)  # type: ignore[attr-defined]


def refused(answer: Any) -> bool:
    return answer.status_code == 422 and botcheck.REFUSED in answer.text


def test_a_person_signs_up_without_javascript(client: TestClient, sandbox: Sandbox) -> None:
    page = client.get("/subscribe").text
    assert "<script" not in page
    assert 'name="form_stamp"' in page and 'name="website"' in page
    assert post_form(client, ADA).status_code == 200
    assert len(stored(client)) == 1 and len(sandbox.messages("email")) == 1


def test_a_post_without_the_page_is_refused_and_stores_nothing(
    client: TestClient, sandbox: Sandbox
) -> None:
    answer = client.post("/subscribe", data=ADA)
    assert refused(answer)
    assert 'value="ada@example.org"' in answer.text, "the form comes back filled in"
    assert re.search(r'name="form_stamp" value="[^"]+"', answer.text), "with a new stamp"
    assert stored(client) == [] and sandbox.messages("email") == []


def test_a_form_sent_faster_than_a_person_types_is_refused(client: TestClient) -> None:
    assert refused(post_form(client, ADA, after_s=1))
    assert stored(client) == []
    assert post_form(client, ADA, after_s=3).status_code == 200


def test_a_filled_honeypot_is_refused(client: TestClient, sandbox: Sandbox) -> None:
    assert refused(post_form(client, {**ADA, "website": "https://spam.example"}))
    assert stored(client) == [] and sandbox.messages("email") == []


@pytest.mark.parametrize(
    "stamp",
    [
        TimestampSigner("not-our-key", salt="outage-dispatcher.signup-form").sign(b"signup"),
        b"signup.AAAAAA.forged",
    ],
    ids=["another key", "made up"],
)
def test_a_forged_stamp_is_refused(client: TestClient, stamp: bytes) -> None:
    with time_machine.travel(time.time() + 10, tick=False):
        answer = client.post("/subscribe", data={**ADA, "form_stamp": stamp.decode()})
    assert refused(answer)
    assert stored(client) == []


def test_a_stamp_older_than_a_day_is_refused(client: TestClient) -> None:
    assert refused(post_form(client, ADA, after_s=botcheck.MAX_AGE_S + 60))
    assert stored(client) == []
