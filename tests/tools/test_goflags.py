"""Go's flag spellings: durations and booleans as the seeds' manifests write them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gpuheal.tools.goflags import go_bool, go_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15), ("100ms", 0.1), ("1m30s", 90), ("1.5h", 5400), ("0", 0), ("250us", 0.00025), (".5s", 0.5)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert go_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["15", "s", "1x", "1s2", "-1s", "", "1m 30s"])
def test_what_is_not_a_go_duration_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        go_duration(text)


@pytest.mark.parametrize(("text", "value"), [("true", True), ("T", True), ("1", True), ("false", False), ("0", False)])
def test_go_booleans(text: str, value: bool) -> None:
    assert go_bool(text) is value


def test_what_is_not_a_go_boolean_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="'yes' is not a boolean"):
        go_bool("yes")


@pytest.mark.parametrize("text", ["100000000000h", "9" * 400 + "s"])
def test_a_duration_too_long_to_hold_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="is too long a duration"):
        go_duration(text)
