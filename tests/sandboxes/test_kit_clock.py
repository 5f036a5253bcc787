"""The shared sandbox clock: never backwards, truncated to its resolution, in every form."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sandboxes.kit.clock import MILLISECOND_US, SECOND_US, Clock


def scripted(*nanoseconds: int):
    """A time source that answers the given readings in turn."""
    readings = iter(nanoseconds)
    return lambda: next(readings)


def test_a_host_clock_stepping_back_repeats_the_last_stamp() -> None:
    clock = Clock(MILLISECOND_US, source=scripted(5_000_000_000, 4_000_000_000, 6_000_000_000))
    assert [clock.now_us(), clock.now_us(), clock.now_us()] == [5_000_000, 5_000_000, 6_000_000]


def test_stamps_are_truncated_to_the_resolution() -> None:
    reading = 1_700_000_000_123_456_789
    assert Clock(MILLISECOND_US, source=scripted(reading)).now_us() == 1_700_000_000_123_000
    assert Clock(SECOND_US, source=scripted(reading)).now_us() == 1_700_000_000_000_000
    assert Clock(1, source=scripted(reading)).now_us() == 1_700_000_000_123_456


def test_the_forms_agree() -> None:
    reading = 1_700_000_000_250_000_000  # 2023-11-14T22:13:20.250Z
    clock = Clock(MILLISECOND_US, source=scripted(reading, reading, reading))
    assert clock.now_datetime() == datetime(2023, 11, 14, 22, 13, 20, 250_000)
    assert clock.now_seconds() == 1_700_000_000.25
    assert clock.now_whole_seconds() == 1_700_000_000


def test_the_real_source_is_utc_and_monotonic() -> None:
    clock = Clock()
    stamps = [clock.now_us() for _ in range(200)]
    assert stamps == sorted(stamps)
    assert abs(clock.now_datetime() - datetime.now(timezone.utc).replace(tzinfo=None)).total_seconds() < 5


def test_a_resolution_below_one_microsecond_is_refused() -> None:
    with pytest.raises(ValueError):
        Clock(0)
