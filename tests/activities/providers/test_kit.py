"""The provider kit on its own: classification into ProviderErrors, the reboot's record, operations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gpuheal.activities.providers import ProviderError, RebootTarget, kit
from gpuheal.activities.providers.kit import Failure


class Throttled(Exception):
    pass


class Lost(Exception):
    pass


def classify(error: Exception) -> Failure | None:
    """A provider's classifier: throttling is answered (unsent), a lost answer is not, the rest is not the SDK's."""
    if isinstance(error, Throttled):
        return Failure("throttled", retryable=True)
    if isinstance(error, Lost):
        return Failure("no answer", retryable=True, unsent=False)
    return None


def fails(error: Exception) -> None:
    raise error


async def test_a_classified_failure_becomes_a_provider_error_caused_by_the_sdk_error() -> None:
    cause = Throttled()
    with pytest.raises(ProviderError) as raised:
        await kit.call(lambda: fails(cause), classify)
    assert str(raised.value) == "throttled"
    assert raised.value.retryable is True
    assert raised.value.__cause__ is cause
    # Outside a reboot nothing is asked, so nothing is refused.
    assert raised.value.refused is False


async def test_an_error_the_classifier_does_not_know_propagates_as_it_is() -> None:
    with pytest.raises(KeyError):
        await kit.call(lambda: fails(KeyError("x")), classify)


async def test_inside_a_reboot_an_unsent_failure_is_refused_and_a_lost_answer_is_not() -> None:
    with kit.asking(), pytest.raises(ProviderError) as throttled:
        await kit.call(lambda: fails(Throttled()), classify)
    assert throttled.value.refused is True
    with kit.asking(), pytest.raises(ProviderError) as lost:
        await kit.call(lambda: fails(Lost()), classify)
    assert lost.value.refused is False


async def test_a_request_reached_in_the_worker_thread_makes_later_failures_not_refused() -> None:
    """Hooks report from the SDK's thread; the record is the reboot's, wherever the call runs."""

    def accepted_then_throttled() -> None:
        kit.answered(202)
        raise Throttled()

    with kit.asking(), pytest.raises(ProviderError) as raised:
        await kit.call(accepted_then_throttled, classify)
    assert raised.value.refused is False


@pytest.mark.parametrize(("status", "refused"), [(429, True), (403, True), (502, False), (504, False)])
async def test_error_answers_keep_a_reboot_refused_except_a_gateways(status: int, refused: bool) -> None:
    def answered() -> None:
        kit.answered(status)
        raise Throttled()

    with kit.asking(), pytest.raises(ProviderError) as raised:
        await kit.call(answered, classify)
    assert raised.value.refused is refused


async def test_a_reboots_record_ends_with_it() -> None:
    with kit.asking():
        kit.reached()
    with kit.asking(), pytest.raises(ProviderError) as raised:
        await kit.call(lambda: fails(Throttled()), classify)
    assert raised.value.refused is True


def test_a_provider_id_that_names_no_machine_is_final_and_refused_only_in_a_reboot() -> None:
    target = RebootTarget("node-1", "x://bad")
    outside = kit.not_located(target, "a thing", "x://<id>", "no id")
    assert (
        str(outside) == "node node-1 has providerID 'x://bad', which does not name a thing (no id); expected x://<id>"
    )
    assert outside.retryable is False and outside.refused is False
    with kit.asking():
        assert kit.not_located(target, "a thing", "x://<id>").refused is True


def test_a_provider_error_is_fixed_when_built() -> None:
    error = ProviderError("no", retryable=True, refused=True)
    with pytest.raises(AttributeError):
        error.refused = False  # type: ignore[misc]
    assert error.refused is True and error.retryable is True


async def test_follow_operation_polls_until_done() -> None:
    polled: list[timedelta] = []

    async def poll(left: timedelta) -> int:
        polled.append(left)
        return len(polled)

    state = await kit.follow_operation(
        0, poll, lambda n: n >= 3, timeout=timedelta(seconds=60), interval=timedelta(0), overdue=str
    )
    assert state == 3 and len(polled) == 3
    assert all(timedelta(0) < left <= timedelta(seconds=60) for left in polled)


async def test_follow_operation_gives_up_retryably_at_its_deadline() -> None:
    async def poll(left: timedelta) -> str:
        raise AssertionError("no poll after the deadline")

    with pytest.raises(ProviderError) as raised:
        await kit.follow_operation(
            "RUNNING",
            poll,
            lambda s: s == "DONE",
            timeout=timedelta(0),
            interval=timedelta(seconds=1),
            overdue=lambda s: f"still {s}",
        )
    assert str(raised.value) == "still RUNNING" and raised.value.retryable is True


async def test_an_operation_accepted_and_overdue_is_not_refused() -> None:
    async def poll(left: timedelta) -> str:
        return "RUNNING"

    with kit.asking():
        kit.reached()
        with pytest.raises(ProviderError) as raised:
            await kit.follow_operation(
                "RUNNING", poll, lambda s: s == "DONE", timeout=timedelta(0), interval=timedelta(0), overdue=str
            )
    assert raised.value.refused is False


def test_one_line_joins_lines_and_cuts_at_the_limit() -> None:
    assert kit.one_line("a\n  b\tc") == "a b c"
    assert kit.one_line(None) == ""
    cut = kit.one_line("x" * (kit.MESSAGE_LIMIT + 5))
    assert len(cut) == kit.MESSAGE_LIMIT and cut.endswith("…")
    assert kit.one_line("x" * kit.MESSAGE_LIMIT) == "x" * kit.MESSAGE_LIMIT


def test_the_client_cache_builds_once_per_key_and_again_when_told_not_to_keep() -> None:
    cache: kit.ClientCache[str, list[str]] = kit.ClientCache()
    built: list[str] = []

    def build(key: str) -> list[str]:
        built.append(key)
        return [key]

    first = cache.get("a", lambda: build("a"))
    assert cache.get("a", lambda: build("a")) is first
    cache.get("b", lambda: build("b"))
    assert built == ["a", "b"]
    assert cache.get("a", lambda: build("a"), keep=lambda _: False) is not first
    assert built == ["a", "b", "a"]
    assert len(cache.drain()) == 2
    cache.get("a", lambda: build("a"))
    assert built == ["a", "b", "a", "a"]
