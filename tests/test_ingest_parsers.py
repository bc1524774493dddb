"""Each monitoring source's parser against payloads shaped like the product really sends them.

Fixtures in tests/fixtures/ingest name, at the top of each, what they follow; these tests pin
what events they become and which shapes are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from dispatcher.ingest import alertmanager, generic, grafana, uptime_kuma
from dispatcher.ingest.events import AlertEvent, AlertStatus, IngestMapping
from dispatcher.models import Severity
from tests.webhooks_support import fixture as load

MAPPING = IngestMapping()
FIRING, RESOLVED = AlertStatus.FIRING, AlertStatus.RESOLVED
AM_GROUP = '{}:{alertname="ProbeFailure"}'
CHECKOUT, PAYMENTS, STATUS_API = "0c5be584e506c4e4", "821cb099e781ed20", "93170237cb4b0eed"

Parser = Callable[[dict[str, object], IngestMapping], list[AlertEvent]]


def statuses(events: list[AlertEvent]) -> dict[str, AlertStatus]:
    return {event.alert_key: event.status for event in events}


# --- Alertmanager ---------------------------------------------------------------------------


def test_alertmanager_firing_group_maps_each_alert() -> None:
    checkout, payments = alertmanager.parse(load("alertmanager_firing"), MAPPING)

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
    events = alertmanager.parse(load("alertmanager_mixed"), MAPPING)

    # Top-level status is "firing"; each alert's own status decides.
    assert statuses(events) == {CHECKOUT: RESOLVED, PAYMENTS: FIRING}
    assert {event.group_key for event in events} == {AM_GROUP}


def test_alertmanager_all_resolved() -> None:
    events = alertmanager.parse(load("alertmanager_resolved"), MAPPING)

    assert statuses(events) == {CHECKOUT: RESOLVED, PAYMENTS: RESOLVED}


def test_alertmanager_new_alert_joining_the_group() -> None:
    events = alertmanager.parse(load("alertmanager_third_alert"), MAPPING)

    assert statuses(events) == {CHECKOUT: FIRING, PAYMENTS: FIRING, STATUS_API: FIRING}
    joined = events[2]
    assert joined.group_key == AM_GROUP
    assert joined.components == ["general"]  # neither component nor service label
    assert joined.severity is Severity.MAJOR  # "P2" is not in the map: default severity
    assert joined.title == "Disruption affecting general"


def test_status_never_comes_from_ends_at() -> None:
    payload = load("alertmanager_mixed")
    payload["alerts"][1]["endsAt"] = "2025-03-04T09:00:00Z"  # in the past, still "firing"

    assert statuses(alertmanager.parse(payload, MAPPING))[PAYMENTS] is FIRING


def test_component_falls_back_to_common_labels() -> None:
    payload = load("alertmanager_firing")
    del payload["alerts"][0]["labels"]["service"]
    payload["commonLabels"]["service"] = "storefront"

    assert alertmanager.parse(payload, MAPPING)[0].components == ["storefront"]


@pytest.mark.parametrize("fingerprint", [None, ""])
def test_missing_fingerprint_falls_back_to_alertmanagers_own(fingerprint: str | None) -> None:
    payload = load("alertmanager_firing")
    if fingerprint is None:
        del payload["alerts"][0]["fingerprint"]
    else:
        payload["alerts"][0]["fingerprint"] = fingerprint

    # The fixture's fingerprints are Alertmanager's, so the fallback keys the alert identically.
    assert alertmanager.parse(payload, MAPPING)[0].alert_key == CHECKOUT


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
    events = alertmanager.parse(load("alertmanager_third_alert"), mapping)

    assert [event.components for event in events] == [["unassigned"], ["unassigned"], ["platform"]]
    assert [event.severity for event in events] == [
        Severity.CRITICAL,  # "page" is not in this map
        Severity.CRITICAL,
        Severity.MINOR,  # "P2", case-insensitively
    ]
    assert [event.components for event in grafana.parse(load("grafana_firing"), mapping)] == [
        ["blue"],
        ["blue"],
    ]


# --- Grafana --------------------------------------------------------------------------------


def test_grafana_firing_and_resolved() -> None:
    firing = grafana.parse(load("grafana_firing"), MAPPING)
    resolved = grafana.parse(load("grafana_resolved"), MAPPING)

    expected_keys = ["c6eadffa33fcdf37", "bc97ff14869b13e3"]
    assert [event.alert_key for event in firing] == expected_keys
    assert [event.alert_key for event in resolved] == expected_keys
    assert {event.status for event in firing} == {FIRING}
    assert {event.status for event in resolved} == {RESOLVED}
    memory = firing[0]
    assert (memory.source, memory.group_key) == ("grafana", "{}:{}")
    assert memory.components == ["general"]
    assert memory.severity is Severity.MAJOR
    assert memory.message == "This alert was triggered for zone us-1"
    assert memory.url == "https://grafana.example.com/alerting/grafana/1afz29v7z/view?orgId=1"
    assert memory.started_at == datetime(2021, 10, 12, 7, 51, 3, 157076, tzinfo=UTC)


def test_grafana_test_notification_parses() -> None:
    [event] = grafana.parse(load("grafana_test_notification"), MAPPING)

    assert event.status is FIRING
    assert event.alert_key == "57c6d9296de2ad39"
    assert event.components == ["general"]
    assert event.message == "Notification test"
    assert event.url is None  # generatorURL is "" for the test alert


# --- Uptime Kuma ----------------------------------------------------------------------------


def test_uptime_kuma_down_fires() -> None:
    [event] = uptime_kuma.parse(load("uptime_kuma_down"), MAPPING)

    assert event == AlertEvent(
        source="uptime-kuma",
        group_key="7",
        alert_key="7",
        status=FIRING,
        title="Disruption affecting Checkout API",
        severity=Severity.MAJOR,
        components=["Checkout API"],
        message="Request failed with status code 503",
        started_at=datetime(2025, 3, 4, 9, 12, 45, 527000, tzinfo=UTC),
    )


def test_uptime_kuma_up_resolves_with_the_outage_start() -> None:
    [event] = uptime_kuma.parse(
        load("uptime_kuma_up"), IngestMapping(default_severity=Severity.MINOR)
    )

    assert (event.group_key, event.alert_key, event.status) == ("7", "7", RESOLVED)
    assert event.severity is Severity.MINOR
    assert event.started_at == datetime(2025, 3, 4, 9, 12, 45, 527000, tzinfo=UTC)


def test_uptime_kuma_placeholder_message_is_dropped() -> None:
    payload = load("uptime_kuma_down")
    payload["heartbeat"]["msg"] = "N/A"

    assert uptime_kuma.parse(payload, MAPPING)[0].message is None


@pytest.mark.parametrize(
    "fixture", ["uptime_kuma_pending", "uptime_kuma_maintenance", "uptime_kuma_test"]
)
def test_uptime_kuma_accepts_but_ignores(fixture: str) -> None:
    assert uptime_kuma.parse(load(fixture), MAPPING) == []


# --- generic --------------------------------------------------------------------------------


def test_generic_firing_and_resolved() -> None:
    [firing] = generic.parse(load("generic_firing"), MAPPING)
    [resolved] = generic.parse(load("generic_resolved"), MAPPING)

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
    (uptime_kuma.parse, "uptime_kuma_test", _drop(("msg",)), ("msg",)),
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
