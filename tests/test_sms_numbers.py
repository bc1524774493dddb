"""Which numbers we text (dispatcher/subscribers/numbers.py): a mobile in OUTAGE_SMS_COUNTRIES,
never a premium-rate or shared-cost one, whoever signs up; a landline or a foreign number only
when an operator vouches for it. Refusals name the field (422 `phone`, exit 2 `--phone`) and
store and send nothing."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import phonenumbers
import pytest
from fastapi.testclient import TestClient
from phonenumbers import PhoneNumberType
from typer.testing import CliRunner

from dispatcher.cli import app as cli
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.links import LinkPurpose
from dispatcher.models import SubscriberIn
from dispatcher.sandbox.server import Sandbox
from dispatcher.settings import Settings, get_settings
from dispatcher.subscribers import records
from dispatcher.web.app import create_app
from tests.conftest import API_TOKEN


def example(region: str, kind: int) -> str:
    number = phonenumbers.example_number_for_type(region, kind)
    assert number is not None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# The destinations of the report: premium and high-cost ranges, and far-away mobiles.
REFUSED = {
    "GB premium rate (+44 90...)": "+449012345678",
    "DE premium rate (+49 900...)": example("DE", PhoneNumberType.PREMIUM_RATE),
    "FR premium rate (+33 89...)": "+33891234567",
    "AT premium rate (+43 900...)": "+43900123456",
    "DE shared cost (+49 180...)": example("DE", PhoneNumberType.SHARED_COST),
    "GB personal forwarding (+44 70...)": "+447012345678",
    "Somalia mobile": "+252612345678",
    "Cuba mobile": "+5351234567",
    "North Korea mobile": example("KP", PhoneNumberType.MOBILE),
    "DE landline": "+4930123456",
}
ACCEPTED = {
    "DE mobile": "+4915112345678",
    "US mobile or fixed line": "+14155550100",
    "FR mobile": "+33612345678",
}
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def pipeline_of(client: TestClient) -> Pipeline:
    pipeline: Pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    return pipeline


def signup(phone: str) -> dict[str, object]:
    return {"name": "Ada", "phone": phone, "channels": ["sms"]}


@pytest.mark.parametrize("phone", REFUSED.values(), ids=REFUSED.keys())
def test_public_sign_up_refuses_numbers_we_would_not_text(
    client: TestClient, sandbox: Sandbox, phone: str
) -> None:
    answer = client.post("/api/subscribers", json=signup(phone))
    assert answer.status_code == 422, answer.text
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["body", "phone"]
    assert records.list_all(pipeline_of(client).store) == []
    assert sandbox.messages("sms") == []


@pytest.mark.parametrize("phone", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_public_sign_up_takes_a_mobile_in_the_countries_served(
    client: TestClient, sandbox: Sandbox, phone: str
) -> None:
    assert client.post("/api/subscribers", json=signup(phone)).status_code == 202
    assert [m["to"] for m in sandbox.messages("sms")] == [phone]


def test_the_countries_are_the_operators_to_choose(
    web_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTAGE_SMS_COUNTRIES", "de, at")
    countries = Settings().sms_countries
    assert countries == ["DE", "AT"]
    with TestClient(create_app(web_settings.model_copy(update={"sms_countries": countries}))) as c:
        assert c.post("/api/subscribers", json=signup("+4915112345678")).status_code == 202
        refused = c.post("/api/subscribers", json=signup("+14155550100"))
    assert refused.status_code == 422
    assert "US" in refused.json()["detail"][0]["msg"]


def test_an_unknown_country_code_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OUTAGE_SMS_COUNTRIES", "DE,XX")
    with pytest.raises(ValueError, match="XX"):
        Settings()


def test_an_operator_may_vouch_for_a_landline_but_never_for_a_premium_number(
    client: TestClient,
) -> None:
    vouched = {**signup("+4930123456"), "confirmed": True}
    assert client.post("/api/subscribers", json=vouched, headers=AUTH).status_code == 201
    abroad = {**signup("+252612345678"), "confirmed": True}
    assert client.post("/api/subscribers", json=abroad, headers=AUTH).status_code == 201
    premium = {**signup("+449012345678"), "confirmed": True}
    answer = client.post("/api/subscribers", json=premium, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "phone"]
    unvouched = client.post("/api/subscribers", json=signup("+4930123456"), headers=AUTH)
    assert unvouched.status_code == 422, "a landline cannot answer a confirmation text"


def test_the_status_page_form_names_the_phone_field(client: TestClient, sandbox: Sandbox) -> None:
    from tests.test_status_page import post_form

    answer = post_form(client, {"name": "Ada", "phone": "+449012345678"})
    assert answer.status_code == 422
    assert re.search(r'id="phone-error">[^<]*premium-rate', answer.text)
    assert sandbox.messages("sms") == []


def test_the_preference_centre_refuses_a_new_premium_number_and_keeps_an_old_one(
    client: TestClient,
) -> None:
    pipeline = pipeline_of(client)
    landline = records.add(
        pipeline.store,
        pipeline.registry,
        SubscriberIn(
            name="Ada",
            phone="+4930123456",
            email="ada@example.org",
            channels=["sms", "email"],
            confirmed=True,
        ),
    )
    page = urlsplit(pipeline.links.url(LinkPurpose.MANAGE, landline)).path
    form = {
        "order": ["sms", "email"],
        "channels": ["sms", "email"],
        "email": "ada@example.org",
        "phone": "+4930123456",
        "min_severity": "major",
        "timezone": "UTC",
        "locale": "en",
    }
    saved = client.post(page, data=form, follow_redirects=False)
    assert saved.status_code == 303, "a vouched number on file stays"
    answer = client.post(page, data={**form, "phone": "+449012345678"})
    assert answer.status_code == 422
    assert 'id="phone-error"' in answer.text
    assert records.list_all(pipeline.store)[0].phone == "+4930123456"


runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OUTAGE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    monkeypatch.setenv("OUTAGE_SANDBOX_URL", sandbox.url)
    get_settings.cache_clear()
    return tmp_path


def outage(*args: str) -> tuple[int, str]:
    get_settings.cache_clear()
    result = runner.invoke(cli, list(args))
    return result.exit_code, result.stderr


def test_cli_refuses_a_premium_number_naming_the_option(env: Path, sandbox: Sandbox) -> None:
    code, err = outage("subscriber", "add", "--name", "X", "--phone", "+449012345678",
                       "--channels", "sms", "--confirmed")  # fmt: skip
    assert code == 2
    assert "--phone: this is a premium-rate number" in err
    code, err = outage("subscriber", "add", "--name", "X", "--phone", "+4930123456",
                       "--channels", "sms")  # fmt: skip
    assert (code, "--phone: this is a landline number" in err) == (2, True)
    code, _ = outage("subscriber", "add", "--name", "X", "--phone", "+4930123456",
                     "--channels", "sms", "--confirmed")  # fmt: skip
    assert code == 0, "an operator may vouch for a customer's landline"
    assert sandbox.messages("sms") == []


def test_an_import_reports_a_premium_number_by_its_line(env: Path) -> None:
    file = env / "people.csv"
    file.write_text(
        "name,phone,channels,confirmed\nGood,+4915112345678,sms,yes\nBad,+449012345678,sms,yes\n"
    )
    code, err = outage("subscriber", "import", str(file))
    assert code == 1
    assert "line 3:" in err and "premium-rate" in err
