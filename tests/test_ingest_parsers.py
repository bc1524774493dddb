"""Each monitoring source's parser against payloads as the products really send them.

Fixtures in tests/fixtures/ingest follow each product's own source (named at the top of each
file); these tests pin what events they become and which shapes are refused.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from dispatcher.ingest import alertmanager, generic, grafana, pagerduty, uptime_kuma
from dispatcher.ingest.events import AlertEvent, AlertStatus, IngestMapping, Parsed
from dispatcher.models import Severity
from tests.webhooks_support import fixture as load

MAPPING = IngestMapping(pagerduty_services={"PF9KMXH": "checkout"})
FIRING, RESOLVED = AlertStatus.FIRING, AlertStatus.RESOLVED
AM_GROUP = '{}:{alertname="ProbeFailure"}'
CHECKOUT, PAYMENTS, STATUS_API = "0c5be584e506c4e4", "821cb099e781ed20", "93170237cb4b0eed"
GRAFANA_GROUP = '{}:{alertname="Checkout error rate", grafana_folder="Storefront"}'
EU_WEST, US_EAST = "1e60a7cc2132a9dc", "68ec241837c41db0"

Parser = Callable[[dict[str, object], IngestMapping], Parsed]


def events(parse: Parser, name: str, mapping: IngestMapping = MAPPING) -> list[AlertEvent]:
    return list(parse(load(name), mapping).events)


def statuses(found: list[AlertEvent]) -> dict[str, AlertStatus]:
    return {event.alert_key: event.status for event in found}


# --- Alertmanager ---------------------------------------------------------------------------


def test_alertmanager_firing_group_maps_each_alert() -> None:
    checkout, payments = events(alertmanager.parse, "alertmanager_firing")

    assert checkout == AlertEvent(
        source="alertmanager",
        group_key=AM_GROUP,
        alert_key=CHECKOUT,
        status=FIRING,
        title="Checkout is unavailable",  # the customer_title annotation
        severity=Severity.CRITICAL,  # severity=page
        components=["checkout"],  # no `component` label: falls back to `service`
        message="Probe failure: https://shop.example.com/checkout",  # summary
        started_at=datetime(2025, 3, 4, 9, 12, 45, 828619, tzinfo=UTC),
        url="http://prometheus.example.com:9090/graph?g0.expr=probe_success+%3D%3D+0&g0.tab=1",
    )
    assert payments.alert_key == PAYMENTS
    assert payments.components == ["payments"]  # `component` wins over `service`
    assert payments.title == "Disruption affecting payments"  # no title annotation
    assert payments.severity is Severity.CRITICAL


def test_alertmanager_mixed_payload_gives_both_statuses() -> None:
    found = events(alertmanager.parse, "alertmanager_mixed")

    # Top-level status is "firing"; each alert's own status decides.
    assert statuses(found) == {CHECKOUT: RESOLVED, PAYMENTS: FIRING}
    assert {event.group_key for event in found} == {AM_GROUP}


def test_alertmanager_resolved_alerts_say_nothing_of_their_own_to_customers() -> None:
    found = events(alertmanager.parse, "alertmanager_resolved")

    assert statuses(found) == {CHECKOUT: RESOLVED, PAYMENTS: RESOLVED}
    # Their summary still reads "Probe failure: …": not what customers are told at the end.
    assert [event.message for event in found] == [None, None]


def test_alertmanager_new_alert_joining_the_group() -> None:
    found = events(alertmanager.parse, "alertmanager_third_alert")

    assert statuses(found) == {CHECKOUT: FIRING, PAYMENTS: FIRING, STATUS_API: FIRING}
    joined = found[2]
    assert joined.group_key == AM_GROUP
    assert joined.components == ["general"]  # neither component nor service label
    assert joined.severity is Severity.MAJOR  # "P2" is not in the map: default severity
    assert joined.title == "Disruption affecting general"


def test_alertmanager_newer_fields_are_accepted_and_change_nothing() -> None:
    payload = load("alertmanager_v034_firing")
    assert payload["notification_reason"] == "first notification"
    assert payload["routeLabels"] == {"team": "storefront"}

    assert events(alertmanager.parse, "alertmanager_v034_firing") == events(
        alertmanager.parse, "alertmanager_firing"
    )
    for reason in ("repeat interval elapsed", "new alerts added", "some new reason"):
        again = {**payload, "notification_reason": reason, "routeLabels": None}
        assert alertmanager.parse(again, MAPPING) == alertmanager.parse(payload, MAPPING)


def test_status_never_comes_from_ends_at() -> None:
    payload = load("alertmanager_mixed")
    payload["alerts"][1]["endsAt"] = "2025-03-04T09:00:00Z"  # in the past, still "firing"

    assert statuses(list(alertmanager.parse(payload, MAPPING).events))[PAYMENTS] is FIRING


def test_component_falls_back_to_common_labels() -> None:
    payload = load("alertmanager_firing")
    del payload["alerts"][0]["labels"]["service"]
    payload["commonLabels"]["service"] = "storefront"

    assert alertmanager.parse(payload, MAPPING).events[0].components == ["storefront"]


@pytest.mark.parametrize("fingerprint", [None, ""])
def test_missing_fingerprint_falls_back_to_alertmanagers_own(fingerprint: str | None) -> None:
    payload = load("alertmanager_firing")
    if fingerprint is None:
        del payload["alerts"][0]["fingerprint"]
    else:
        payload["alerts"][0]["fingerprint"] = fingerprint

    # The fixture's fingerprints are Alertmanager's, so the fallback keys the alert identically.
    assert alertmanager.parse(payload, MAPPING).events[0].alert_key == CHECKOUT


def test_labels_fingerprint_matches_prometheus_test_vectors() -> None:
    # prometheus/common model/signature_test.go
    assert alertmanager.labels_fingerprint({}) == f"{14695981039346656037:016x}"
    labels = {"name": "garland, briggs", "fear": "love is not enough"}
    assert alertmanager.labels_fingerprint(labels) == f"{5799056148416392346:016x}"


def test_custom_mapping_is_honoured() -> None:
    mapping = IngestMapping(
        component_labels=["team"],
        default_component="unassigned",
        severity_map={"p2": Severity.MINOR},
        default_severity=Severity.CRITICAL,
    )
    found = events(alertmanager.parse, "alertmanager_third_alert", mapping)

    assert [event.components for event in found] == [["unassigned"], ["unassigned"], ["platform"]]
    assert [event.severity for event in found] == [
        Severity.CRITICAL,  # "page" is not in this map
        Severity.CRITICAL,
        Severity.MINOR,  # "P2", case-insensitively
    ]
    folders = IngestMapping(component_labels=["grafana_folder"])
    assert [e.components for e in events(grafana.parse, "grafana_firing", folders)] == [
        ["Storefront"],
        ["Storefront"],
    ]


# --- Grafana --------------------------------------------------------------------------------


def test_grafana_real_body_maps_each_alert() -> None:
    eu, us = events(grafana.parse, "grafana_firing")

    assert eu == AlertEvent(
        source="grafana",
        group_key=GRAFANA_GROUP,  # the default policy: grouped by folder and alert name
        alert_key=EU_WEST,
        status=FIRING,
        title="Checkout is failing for some customers",
        severity=Severity.CRITICAL,
        components=["checkout"],
        message="Checkout errors above 5% in eu-west",
        started_at=datetime(2025, 3, 4, 9, 12, 40, tzinfo=UTC),
        url="https://grafana.example.com/alerting/grafana/ddlq2v9xyz0zkb/view?orgId=1",
    )
    assert (us.alert_key, us.status) == (US_EAST, FIRING)


def test_grafana_repeat_with_fresh_values_is_the_same_events() -> None:
    assert (
        load("grafana_repeat")["alerts"][0]["values"]
        != load("grafana_firing")["alerts"][0]["values"]
    )
    assert events(grafana.parse, "grafana_repeat") == events(grafana.parse, "grafana_firing")


def test_grafana_resolved() -> None:
    found = events(grafana.parse, "grafana_resolved")

    assert statuses(found) == {EU_WEST: RESOLVED, US_EAST: RESOLVED}
    assert {event.group_key for event in found} == {GRAFANA_GROUP}
    assert [event.message for event in found] == [None, None]


@pytest.mark.parametrize(
    "name",
    [
        "grafana_test_webhook",  # since October 2025: receiver "webhook"
        "grafana_test_contact_point",  # October 2023 on: receiver the contact point's name
        "grafana_test_custom",  # the user's labels merged over the test alert's
        "grafana_test_legacy",  # before October 2023: labels and time as Go prints them
    ],
)
def test_grafana_test_button_is_a_test_and_no_alert(name: str) -> None:
    assert grafana.parse(load(name), MAPPING) == Parsed(test=True)


def test_an_alert_rule_named_like_the_test_is_still_an_alert() -> None:
    """A real group of a rule called TestAlert: its key is the route's and group labels'."""
    payload = load("grafana_test_webhook")
    payload["groupKey"] = '{}:{alertname="TestAlert", instance="Grafana"}'
    payload["receiver"] = "outage-dispatcher"

    [event] = grafana.parse(payload, MAPPING).events
    assert event.group_key == '{}:{alertname="TestAlert", instance="Grafana"}'


def test_a_test_shaped_key_of_another_alert_is_not_a_test() -> None:
    payload = load("grafana_test_webhook")
    payload["alerts"][0]["fingerprint"] = EU_WEST  # not the fingerprint in the key

    assert grafana.parse(payload, MAPPING).test is False


# --- Uptime Kuma ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["uptime_kuma_down", "uptime_kuma_v1_down"])
def test_uptime_kuma_down_fires_for_the_component_its_tags_name(name: str) -> None:
    [event] = events(uptime_kuma.parse, name)

    assert event == AlertEvent(
        source="uptime-kuma",
        group_key="7",
        alert_key="7",
        status=FIRING,
        title="Disruption affecting checkout",
        severity=Severity.CRITICAL,  # the severity tag
        components=["checkout"],  # the service tag, not the monitor's name
        message=None,  # the checker's words are for the team
        detail="[Checkout API] [🔴 Down] Request failed with status code 503",
        started_at=datetime(2025, 3, 4, 9, 12, 45, 527000, tzinfo=UTC),
    )


def test_uptime_kuma_resend_while_down_is_the_same_event() -> None:
    [down] = events(uptime_kuma.parse, "uptime_kuma_down")
    [resent] = events(uptime_kuma.parse, "uptime_kuma_resend")

    assert load("uptime_kuma_resend")["heartbeat"]["important"] is False
    assert resent.model_copy(update={"started_at": down.started_at}) == down


def test_uptime_kuma_up_resolves_with_the_outage_start() -> None:
    [event] = events(uptime_kuma.parse, "uptime_kuma_up")

    assert (event.group_key, event.alert_key, event.status) == ("7", "7", RESOLVED)
    assert event.message is None  # never "200 - OK"
    assert event.detail == "[Checkout API] [✅ Up] 200 - OK"
    assert event.started_at == datetime(2025, 3, 4, 9, 12, 45, 527000, tzinfo=UTC)
    [old] = events(uptime_kuma.parse, "uptime_kuma_v1_up")  # 1.23 sends no lastDownTime
    assert (old.status, old.started_at, old.components) == (RESOLVED, None, ["checkout"])


def test_uptime_kuma_without_tags_falls_back_to_the_monitor_name() -> None:
    payload = load("uptime_kuma_down")
    payload["monitor"]["tags"] = []

    [event] = uptime_kuma.parse(payload, IngestMapping(default_severity=Severity.MINOR)).events
    assert (event.components, event.severity) == (["Checkout API"], Severity.MINOR)


def test_uptime_kuma_tags_match_regardless_of_case_and_may_name_several() -> None:
    payload = load("uptime_kuma_down")
    payload["monitor"]["tags"] = [
        {"tag_id": 3, "monitor_id": 7, "value": "", "name": "Service", "color": "#000"},
        {"tag_id": 3, "monitor_id": 7, "value": "checkout", "name": "Service", "color": "#000"},
        {"tag_id": 3, "monitor_id": 7, "value": "payments", "name": "SERVICE ", "color": "#000"},
        {"tag_id": 4, "monitor_id": 7, "value": "Info", "name": "Severity", "color": "#000"},
        {"tag_id": 5, "monitor_id": 7, "value": None, "name": "component", "color": "#000"},
    ]

    [event] = uptime_kuma.parse(payload, MAPPING).events
    assert event.components == ["checkout", "payments"]
    assert event.severity is Severity.MINOR
    assert event.title == "Disruption affecting checkout, payments"


@pytest.mark.parametrize("name", ["uptime_kuma_pending", "uptime_kuma_maintenance"])
def test_uptime_kuma_pending_and_maintenance_are_no_event(name: str) -> None:
    assert uptime_kuma.parse(load(name), MAPPING) == Parsed()


def test_uptime_kuma_test_button_is_a_test() -> None:
    assert uptime_kuma.parse(load("uptime_kuma_test"), MAPPING) == Parsed(test=True)


@pytest.mark.parametrize("name", ["uptime_kuma_cert_expiry", "uptime_kuma_domain_expiry"])
def test_uptime_kuma_expiry_warnings_are_a_notice_for_the_team(name: str) -> None:
    parsed = uptime_kuma.parse(load(name), MAPPING)

    assert parsed == Parsed(notice=load(name)["msg"])


# --- PagerDuty ------------------------------------------------------------------------------


def test_pagerduty_triggered_on_a_mapped_service() -> None:
    [event] = events(pagerduty.parse, "pagerduty_triggered")

    assert event == AlertEvent(
        source="pagerduty",
        group_key="Q2CKYRLH85UNN4",
        alert_key="Q2CKYRLH85UNN4",
        status=FIRING,
        title="Disruption affecting checkout",  # not the responders' title
        severity=Severity.MAJOR,  # high urgency, no priority
        components=["checkout"],
        detail="PagerDuty incident #37 triggered: CRITICAL: checkout-api 5xx rate 7.1% on "
        "prod-eu-1",
        started_at=datetime(2025, 3, 4, 9, 12, 51, tzinfo=UTC),
        url="https://acme.pagerduty.com/incidents/Q2CKYRLH85UNN4",
    )


def test_pagerduty_resolved_and_reopened() -> None:
    [resolved] = events(pagerduty.parse, "pagerduty_resolved")
    [reopened] = events(pagerduty.parse, "pagerduty_reopened")

    assert (resolved.status, resolved.reopens) == (RESOLVED, False)
    assert (reopened.status, reopened.reopens) == (FIRING, True)
    assert resolved.group_key == reopened.group_key == "Q2CKYRLH85UNN4"


@pytest.mark.parametrize(
    "name", ["pagerduty_acknowledged", "pagerduty_escalated", "pagerduty_annotated"]
)
def test_pagerduty_responders_events_say_nothing(name: str) -> None:
    assert pagerduty.parse(load(name), MAPPING) == Parsed()


def test_pagerduty_unknown_event_types_are_accepted() -> None:
    payload = load("pagerduty_annotated")
    payload["event"]["event_type"] = "incident.something_new"
    payload["event"]["data"] = {"type": "something_new", "anything": [1, 2]}

    assert pagerduty.parse(payload, MAPPING) == Parsed()


def test_pagerduty_ping_is_a_test() -> None:
    assert pagerduty.parse(load("pagerduty_ping"), MAPPING) == Parsed(test=True)


def test_pagerduty_service_not_mapped_is_nobody_s_business() -> None:
    assert pagerduty.parse(load("pagerduty_triggered"), IngestMapping()) == Parsed()


@pytest.mark.parametrize(
    ("priority", "urgency", "severity"),
    [
        (None, "high", Severity.MAJOR),
        (None, "low", Severity.MINOR),
        ({"id": "PSO75BM", "summary": "P1"}, "low", Severity.CRITICAL),  # p1 in the map
        ({"id": "PSO75BN", "summary": "P4"}, "low", Severity.MINOR),  # not in it: urgency
        (None, "weird", Severity.MAJOR),  # neither: the default severity
    ],
)
def test_pagerduty_severity_from_priority_then_urgency(
    priority: dict[str, str] | None, urgency: str, severity: Severity
) -> None:
    payload = load("pagerduty_triggered")
    payload["event"]["data"] |= {"priority": priority, "urgency": urgency}
    mapping = MAPPING.model_copy(
        update={"severity_map": {**MAPPING.severity_map, "p1": Severity.CRITICAL}}
    )

    assert pagerduty.parse(payload, mapping).events[0].severity is severity


def _v1(secret: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_pagerduty_signature_checks() -> None:
    body = b'{"event": {}}'
    good, old = _v1("new-secret", body), _v1("old-secret", body)

    assert pagerduty.signed(["new-secret"], good, body)
    assert pagerduty.signed(["new-secret"], f"{old},{good}", body)  # PagerDuty rotating
    assert pagerduty.signed(["old-secret", "new-secret"], old, body)  # we are rotating
    assert pagerduty.signed(["new-secret"], good.upper().replace("V1=", "v1="), body)
    assert not pagerduty.signed(["new-secret"], old, body)
    assert not pagerduty.signed(["new-secret"], good, body + b" ")
    assert not pagerduty.signed(["new-secret"], good.replace("v1=", "v0="), body)
    assert not pagerduty.signed(["new-secret"], None, body)
    assert not pagerduty.signed(["new-secret"], "v1=caf\u00e9, ,v1=", body)
    assert pagerduty.signing_secrets(" a, ,b ") == ["a", "b"]


# --- generic --------------------------------------------------------------------------------


def test_generic_firing_and_resolved() -> None:
    [firing] = events(generic.parse, "generic_firing")
    [resolved] = events(generic.parse, "generic_resolved")

    assert firing == AlertEvent(
        source="generic",
        group_key="billing-cron:invoice-run-stalled",
        alert_key="invoice-run-stalled",
        status=FIRING,
        title="Invoices are delayed",
        severity=Severity.MINOR,
        components=["billing", "email"],
        message="This month's invoices are being sent late; no payment is affected.",
        url="https://ops.example.com/jobs/invoice-run",
    )
    assert (resolved.group_key, resolved.status, resolved.message) == (
        firing.group_key,
        RESOLVED,
        None,
    )


# --- wrong shapes ---------------------------------------------------------------------------


def _drop(path: tuple[str | int, ...]) -> Callable[[Any], None]:
    def mutate(payload: Any) -> None:
        for step in path[:-1]:
            payload = payload[step]
        del payload[path[-1]]

    return mutate


def _set(path: tuple[str | int, ...], value: object) -> Callable[[Any], None]:
    def mutate(payload: Any) -> None:
        for step in path[:-1]:
            payload = payload[step]
        payload[path[-1]] = value

    return mutate


WRONG_SHAPES = [
    (alertmanager.parse, "alertmanager_firing", _drop(("alerts",)), ("alerts",)),
    (alertmanager.parse, "alertmanager_firing", _set(("alerts",), {"0": {}}), ("alerts",)),
    (alertmanager.parse, "alertmanager_firing", _set(("alerts",), "none"), ("alerts",)),
    (alertmanager.parse, "alertmanager_firing", _set(("status",), "exploded"), ("status",)),
    (
        alertmanager.parse,
        "alertmanager_mixed",
        _set(("alerts", 1, "status"), "exploded"),
        ("alerts", 1, "status"),
    ),
    (alertmanager.parse, "alertmanager_firing", _drop(("groupKey",)), ("groupKey",)),
    (
        alertmanager.parse,
        "alertmanager_firing",
        _drop(("alerts", 0, "startsAt")),
        ("alerts", 0, "startsAt"),
    ),
    (grafana.parse, "grafana_firing", _drop(("alerts",)), ("alerts",)),
    (
        grafana.parse,
        "grafana_firing",
        _set(("alerts", 0, "status"), "exploded"),
        ("alerts", 0, "status"),
    ),
    (
        grafana.parse,
        "grafana_firing",
        _set(("alerts", 0, "values"), "high"),
        ("alerts", 0, "values"),
    ),
    (
        uptime_kuma.parse,
        "uptime_kuma_down",
        _drop(("heartbeat", "status")),
        ("heartbeat", "status"),
    ),
    (
        uptime_kuma.parse,
        "uptime_kuma_down",
        _set(("heartbeat", "status"), 9),
        ("heartbeat", "status"),
    ),
    (uptime_kuma.parse, "uptime_kuma_down", _set(("monitor",), None), ("monitor",)),
    (uptime_kuma.parse, "uptime_kuma_down", _set(("monitor", "tags"), "x"), ("monitor", "tags")),
    (uptime_kuma.parse, "uptime_kuma_test", _drop(("msg",)), ("msg",)),
    (pagerduty.parse, "pagerduty_triggered", _drop(("event",)), ("event",)),
    (
        pagerduty.parse,
        "pagerduty_triggered",
        _drop(("event", "event_type")),
        ("event", "event_type"),
    ),
    (
        pagerduty.parse,
        "pagerduty_triggered",
        _drop(("event", "data", "service")),
        ("event", "data", "incident", "service"),
    ),
    (pagerduty.parse, "pagerduty_triggered", _drop(("event", "data", "type")), ("event",)),
    (generic.parse, "generic_firing", _set(("mesage",), "typo"), ("mesage",)),
    (generic.parse, "generic_firing", _set(("status",), "exploded"), ("status",)),
    (generic.parse, "generic_firing", _set(("source",), "Billing Cron"), ("source",)),
    (generic.parse, "generic_firing", _set(("components",), []), ("components",)),
    (generic.parse, "generic_firing", _drop(("key",)), ("key",)),
]


@pytest.mark.parametrize(("parse", "fixture", "mutate", "loc"), WRONG_SHAPES)
def test_wrong_shape_names_the_field(
    parse: Parser, fixture: str, mutate: Callable[[Any], None], loc: tuple[str | int, ...]
) -> None:
    payload = load(fixture)
    mutate(payload)

    with pytest.raises(ValidationError) as caught:
        parse(payload, MAPPING)

    assert loc in [error["loc"] for error in caught.value.errors()]
