"""Property-based fuzzing: the parser never raises, and whatever it returns is well-formed."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuheal.agents.gpu_identity import pci_key
from gpuheal.agents.kmsg.decide import decide
from gpuheal.agents.kmsg.parser import EventKind, KernelEvent, KmsgParser
from gpuheal.domain.actions import RecommendedAction
from tests.agents.kmsg.samples import BARE_LINES, FALLEN_OFF_GROUP, VALID_LINES, WRAPPINGS, parse_line

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_UUID = re.compile(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _well_formed(event: KernelEvent | None, text: str) -> None:
    if event is None:
        return
    assert isinstance(event.kind, EventKind)
    assert type(event.code) is int
    assert 0 <= event.code < 1_000_000
    assert pci_key(event.pci) is not None
    assert event.pci_key == pci_key(event.pci)
    assert isinstance(event.message, str)
    assert type(event.fatal) is bool
    assert event.raw == text.rstrip("\r\n")
    assert event.gpu_uuid is None or _UUID.fullmatch(event.gpu_uuid)
    assert event.pid is None or event.pid >= 0
    if event.kind is EventKind.XID:
        # XID 79 is the GPU falling off the bus, and only it is.
        assert event.fallen_off_bus is (event.code == 79)
        assert event.fatal is event.fallen_off_bus
    else:
        assert not event.fallen_off_bus
    if event.kind in (EventKind.GPU_RESET, EventKind.GPU_RESET_FAILED):
        assert (event.code, event.fatal) == (0, False)
    assert isinstance(decide(event).action, RecommendedAction)


def _check_all_ways(text: str) -> None:
    _well_formed(parse_line(text), text)
    parser = KmsgParser()
    for line in [*FALLEN_OFF_GROUP[:2], text, text]:
        _well_formed(parser.feed(line), line)


@FUZZ
@given(st.text())
def test_arbitrary_text(text: str) -> None:
    _check_all_ways(text)


@FUZZ
@given(st.binary())
def test_arbitrary_bytes(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    _well_formed(parse_line(data), text)
    _well_formed(KmsgParser().feed(data), text)


# Text built from the pieces real lines are made of reaches the deep branches far more often than
# uniform text does.
_PIECES = st.sampled_from(
    [
        "NVRM: ",
        "NVRM:",
        "Xid ",
        "SXid ",
        "(PCI:",
        "(",
        "0000:3b:00",
        "00000000:3B:00.0",
        ".0",
        "): ",
        "79",
        "154",
        "20034",
        ", ",
        "pid=",
        "'<unknown>'",
        "name=",
        "Fatal",
        "Non-fatal",
        "GPU ",
        "at ",
        "GPU-b6c3b2be-c55b-d076-fa0e-d464e4c7e08b",
        "has fallen off the bus",
        "GPU reset complete",
        "GPU reset did not complete",
        " not",
        " was successfully reset",
        "nvidia-nvswitch0: ",
        "3,812,6085126134786,-;",
        "[ 4821.337154] ",
        "Nov 23 02:07:01 host kernel: ",
        "kernel: ",
        "<3>",
        " ",
        "\n",
        "\x00",
        "\ufffd",
    ]
)


@FUZZ
@given(st.lists(_PIECES | st.text(max_size=3), max_size=24).map("".join))
def test_text_made_of_line_pieces(text: str) -> None:
    _check_all_ways(text)


_EDIT = st.tuples(st.sampled_from(["insert", "delete", "replace", "truncate"]), st.floats(0, 1), st.characters())


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    line = draw(st.sampled_from(VALID_LINES + FALLEN_OFF_GROUP))
    for operation, where, char in draw(st.lists(_EDIT, min_size=1, max_size=6)):
        at = int(where * len(line))
        if operation == "insert":
            line = line[:at] + char + line[at:]
        elif operation == "delete":
            line = line[:at] + line[at + 1 :]
        elif operation == "replace":
            line = line[:at] + char + line[at + 1 :]
        else:
            line = line[:at]
    return line


@FUZZ
@given(_mutated())
def test_mutations_of_valid_lines(line: str) -> None:
    _check_all_ways(line)
    # As read from a file: bytes that are not UTF-8 (a lone surrogate's) read as U+FFFD.
    data = line.encode("utf-8", errors="surrogatepass")
    _well_formed(parse_line(data), data.decode("utf-8", errors="replace"))


@FUZZ
@given(st.sampled_from(BARE_LINES), st.sampled_from(sorted(WRAPPINGS)))
def test_wrapping_does_not_change_the_event(line: str, wrapping: str) -> None:
    bare = parse_line(line)
    wrapped_line = WRAPPINGS[wrapping].format(line)
    wrapped = parse_line(wrapped_line)
    _well_formed(wrapped, wrapped_line)
    assert bare is not None
    assert wrapped is not None
    assert (wrapped.kind, wrapped.code, wrapped.pci, wrapped.message) == (bare.kind, bare.code, bare.pci, bare.message)
