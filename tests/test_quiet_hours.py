"""Quiet hours: non-critical updates wait until the subscriber's window ends; critical ones don't.

The moments are chosen around midnight and around daylight saving changes, where a window laid
out naively in UTC or on fixed 24-hour days would start or end an hour off.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from dispatcher.models import Severity
from dispatcher.policy.quiet_hours import QuietHours, QuietHoursError, may_send_at

BERLIN = "Europe/Berlin"


def local(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone))  # type: ignore[misc]


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        # 23:30 in Berlin (winter, UTC+1): inside 22:00-07:00, waits until 07:00 next morning.
        (local(BERLIN, 2025, 1, 14, 23, 30), local(BERLIN, 2025, 1, 15, 7, 0)),
        # 03:00 after midnight: the window began on the previous local day.
        (local(BERLIN, 2025, 1, 15, 3, 0), local(BERLIN, 2025, 1, 15, 7, 0)),
        # The edges: the start is quiet, the end is not.
        (local(BERLIN, 2025, 1, 14, 22, 0), local(BERLIN, 2025, 1, 15, 7, 0)),
        (local(BERLIN, 2025, 1, 15, 7, 0), local(BERLIN, 2025, 1, 15, 7, 0)),
        # Daytime: goes at once.
        (local(BERLIN, 2025, 1, 15, 12, 0), local(BERLIN, 2025, 1, 15, 12, 0)),
        # 21:59 UTC is 22:59 in Berlin: quiet, though it is before 22:00 in UTC.
        (datetime(2025, 1, 14, 21, 59, tzinfo=UTC), local(BERLIN, 2025, 1, 15, 7, 0)),
    ],
)
def test_non_critical_waits_for_the_end_of_an_overnight_window(
    moment: datetime, expected: datetime
) -> None:
    released = may_send_at("22:00", "07:00", BERLIN, moment, Severity.MAJOR)
    assert released == expected
    assert released.tzinfo is UTC


def test_critical_goes_through_quiet_hours() -> None:
    moment = local(BERLIN, 2025, 1, 14, 23, 30)
    assert may_send_at("22:00", "07:00", BERLIN, moment, Severity.CRITICAL) == moment
    assert may_send_at("22:00", "07:00", BERLIN, moment, "critical") == moment


def test_no_quiet_hours_or_an_empty_window_never_holds_back() -> None:
    moment = datetime(2025, 1, 14, 23, 30, tzinfo=UTC)
    assert may_send_at(None, None, "UTC", moment, Severity.MINOR) == moment
    assert may_send_at("08:00", "08:00", "UTC", moment, Severity.MINOR) == moment


def test_daytime_window_that_does_not_span_midnight() -> None:
    zone = "America/New_York"
    inside = local(zone, 2025, 7, 1, 13, 0)
    assert may_send_at("12:00", "14:00", zone, inside, Severity.MINOR) == local(
        zone, 2025, 7, 1, 14, 0
    )
    after = local(zone, 2025, 7, 1, 15, 0)
    assert may_send_at("12:00", "14:00", zone, after, Severity.MINOR) == after


def test_window_keeps_its_wall_clock_times_across_daylight_saving_changes() -> None:
    # The night Berlin springs forward (30 March 2025, 02:00 -> 03:00): the night is an hour
    # shorter, yet quiet hours still end at 07:00 local, which is now 05:00 UTC, not 06:00.
    moment = local(BERLIN, 2025, 3, 30, 1, 0)
    released = may_send_at("22:00", "07:00", BERLIN, moment, Severity.MINOR)
    assert released == datetime(2025, 3, 30, 5, 0, tzinfo=UTC)
    # The night it falls back (26 October 2025): 07:00 local is 06:00 UTC again.
    moment = local(BERLIN, 2025, 10, 26, 2, 30)
    released = may_send_at("22:00", "07:00", BERLIN, moment, Severity.MINOR)
    assert released == datetime(2025, 10, 26, 6, 0, tzinfo=UTC)


def test_an_end_time_skipped_by_spring_forward_moves_past_the_gap() -> None:
    # 02:30 does not exist in Berlin on 30 March 2025; it is read as 03:30 (PEP 495, fold=0).
    moment = local(BERLIN, 2025, 3, 30, 1, 45)
    released = may_send_at("01:00", "02:30", BERLIN, moment, Severity.MINOR)
    assert released == local(BERLIN, 2025, 3, 30, 3, 30)


def test_bad_input_names_the_field() -> None:
    with pytest.raises(QuietHoursError, match="quiet_start and quiet_end go together"):
        QuietHours.parse("22:00", None, "UTC")
    with pytest.raises(QuietHoursError, match="timezone"):
        QuietHours.parse("22:00", "07:00", "Mars/Olympus")
    with pytest.raises(QuietHoursError, match="quiet_end"):
        QuietHours.parse("22:00", "7 am", "UTC")
    with pytest.raises(ValueError, match="naive"):
        may_send_at("22:00", "07:00", "UTC", datetime(2025, 1, 1), Severity.MINOR)
