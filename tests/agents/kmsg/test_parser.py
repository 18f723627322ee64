"""The kernel log parser against real-world lines: what must match, in every wrapping, and what must not."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gpuheal.agents.gpu_identity import pci_key
from gpuheal.agents.kmsg.parser import EventKind, KernelEvent, KmsgParser
from tests.agents.kmsg.samples import FALLEN_OFF_GROUP, UUID, WRAPPINGS, parse_line


@dataclass(frozen=True)
class Expected:
    kind: EventKind
    code: int
    pci: str
    message: str
    fatal: bool = False
    pid: int | None = None
    process: str | None = None
    device: str | None = None
    fallen_off_bus: bool = False


BODIES: dict[str, tuple[str, Expected]] = {
    "xid_current": (
        "NVRM: Xid (PCI:0000:cb:00): 13, pid='<unknown>', name=<unknown>, Graphics SM Warp Exception on (GPC 7, TPC 7, SM 0): Illegal Instruction Parameter",
        Expected(
            EventKind.XID,
            13,
            "0000:cb:00",
            "Graphics SM Warp Exception on (GPC 7, TPC 7, SM 0): Illegal Instruction Parameter",
        ),
    ),
    "xid_with_process": (
        "NVRM: Xid (PCI:0000:cb:00): 109, pid=1797828, name=pt_main_thread, Ch 00000008, errorString CTX SWITCH TIMEOUT, Info 0x58005",
        Expected(
            EventKind.XID,
            109,
            "0000:cb:00",
            "Ch 00000008, errorString CTX SWITCH TIMEOUT, Info 0x58005",
            pid=1797828,
            process="pt_main_thread",
        ),
    ),
    "xid_without_process": (
        "NVRM: Xid (PCI:0000:3b:00): 48, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.",
        Expected(
            EventKind.XID,
            48,
            "0000:3b:00",
            "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.",
        ),
    ),
    "xid_old_form_without_pci_tag": (
        "NVRM: Xid (0000:3b:00): 13, 0001 00000000 0000a197 000017d4 00000008 00000000",
        Expected(EventKind.XID, 13, "0000:3b:00", "0001 00000000 0000a197 000017d4 00000008 00000000"),
    ),
    "xid_without_message": (
        "NVRM: Xid (PCI:0000:3b:00): 119",
        Expected(EventKind.XID, 119, "0000:3b:00", ""),
    ),
    "injector_doubled_prefix": (
        "NVRM: NVRM: Xid (PCI:0001:00:00.0): 74, NVLink: fatal error detected on link 14",
        Expected(EventKind.XID, 74, "0001:00:00.0", "NVLink: fatal error detected on link 14"),
    ),
    "injector_xid_79": (
        "NVRM: NVRM: Xid (PCI:0001:00:00.0): 79, GPU has fallen off the bus",
        Expected(EventKind.XID, 79, "0001:00:00.0", "GPU has fallen off the bus", fatal=True, fallen_off_bus=True),
    ),
    "xid_79": (
        "NVRM: Xid (PCI:0000:3b:00): 79, pid=0, name=, GPU has fallen off the bus.",
        Expected(
            EventKind.XID, 79, "0000:3b:00", "GPU has fallen off the bus.", fatal=True, pid=0, fallen_off_bus=True
        ),
    ),
    "xid_79_with_process": (
        "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus.",
        Expected(
            EventKind.XID,
            79,
            "0000:3b:00",
            "GPU has fallen off the bus.",
            fatal=True,
            pid=1234,
            process="python3",
            fallen_off_bus=True,
        ),
    ),
    "xid_79_cut_off_after_the_number": (
        "NVRM: Xid (PCI:0000:3b:00): 79",
        Expected(EventKind.XID, 79, "0000:3b:00", "", fatal=True, fallen_off_bus=True),
    ),
    "xid_cut_off_after_the_pid": (
        "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234",
        Expected(EventKind.XID, 79, "0000:3b:00", "", fatal=True, pid=1234, fallen_off_bus=True),
    ),
    "xid_cut_off_after_the_process_name": (
        "NVRM: Xid (PCI:0000:3b:00): 13, pid=1234, name=python3",
        Expected(EventKind.XID, 13, "0000:3b:00", "", pid=1234, process="python3"),
    ),
    "xid_device_above_1f": (
        "NVRM: Xid (PCI:0000:3b:a0.0): 48, DBE",
        Expected(EventKind.XID, 48, "0000:3b:a0.0", "DBE"),
    ),
    "fallen_off_bus_line": (
        "NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.",
        Expected(
            EventKind.XID,
            79,
            "0000:3b:00.0",
            "GPU 0000:3b:00.0: GPU has fallen off the bus.",
            fatal=True,
            fallen_off_bus=True,
        ),
    ),
    "fallen_off_bus_old_driver": (
        "NVRM: The NVIDIA GPU 0000:3b:00.0 (PCI ID: 10de:1db4) installed in this system has fallen off the bus and is not responding to commands.",
        Expected(
            EventKind.XID,
            79,
            "0000:3b:00.0",
            "The NVIDIA GPU 0000:3b:00.0 (PCI ID: 10de:1db4) installed in this system has fallen off the bus and is not responding to commands.",
            fatal=True,
            fallen_off_bus=True,
        ),
    ),
    "xid_154_gpu_reset_required": (
        "NVRM: Xid (PCI:0000:07:00): 154, pid='<unknown>', name=<unknown>, GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)",
        Expected(
            EventKind.XID, 154, "0000:07:00", "GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)"
        ),
    ),
    "sxid_non_fatal": (
        "nvidia-nvswitch3: SXid (PCI:0000:c6:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error (First)",
        Expected(
            EventKind.SXID,
            12028,
            "0000:c6:00.0",
            "Non-fatal, Link 32 egress non-posted PRIV error (First)",
            device="nvidia-nvswitch3",
        ),
    ),
    "sxid_fatal": (
        "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Fatal, Link 30 LTSSM Fault Up",
        Expected(
            EventKind.SXID,
            20034,
            "0000:05:00.0",
            "Fatal, Link 30 LTSSM Fault Up",
            fatal=True,
            device="nvidia-nvswitch0",
        ),
    ),
    "sxid_without_device_name": (
        "SXid (PCI:0000:05:00.0): 24007, Fatal, Link 29 TL error",
        Expected(EventKind.SXID, 24007, "0000:05:00.0", "Fatal, Link 29 TL error", fatal=True),
    ),
    "gpu_reset_nvrm": (
        "NVRM: GPU 0000:3b:00.0: GPU reset complete",
        Expected(EventKind.GPU_RESET, 0, "0000:3b:00.0", "GPU 0000:3b:00.0: GPU reset complete"),
    ),
    "gpu_reset_nvrm_with_detail": (
        "NVRM: GPU 0000:3b:00.0: GPU reset (secondary bus) completed in 812 ms",
        Expected(
            EventKind.GPU_RESET, 0, "0000:3b:00.0", "GPU 0000:3b:00.0: GPU reset (secondary bus) completed in 812 ms"
        ),
    ),
    "gpu_reset_nvrm_successfully": (
        "NVRM: GPU 0000:3b:00.0: GPU reset completed successfully.",
        Expected(EventKind.GPU_RESET, 0, "0000:3b:00.0", "GPU 0000:3b:00.0: GPU reset completed successfully."),
    ),
    "gpu_reset_nvidia_smi": (
        "GPU 00000000:3B:00.0 was successfully reset.",
        Expected(EventKind.GPU_RESET, 0, "00000000:3B:00.0", "GPU 00000000:3B:00.0 was successfully reset."),
    ),
}


def _check(event: KernelEvent | None, expected: Expected, line: str) -> None:
    assert event is not None, line
    assert event.kind is expected.kind
    assert event.code == expected.code
    assert event.pci == expected.pci
    assert event.message == expected.message
    assert event.fatal is expected.fatal
    assert event.pid == expected.pid
    assert event.process == expected.process
    assert event.device == expected.device
    assert event.fallen_off_bus is expected.fallen_off_bus
    assert event.raw == line
    assert event.gpu_uuid is None


@pytest.mark.parametrize("wrapping", sorted(WRAPPINGS))
@pytest.mark.parametrize("body", sorted(BODIES))
def test_every_report_in_every_wrapping(body: str, wrapping: str) -> None:
    text, expected = BODIES[body]
    line = WRAPPINGS[wrapping].format(text)
    _check(parse_line(line), expected, line)
    _check(KmsgParser().feed(line), expected, line)


@pytest.mark.parametrize(
    "line",
    [
        # journald: the injector's records come back with `NVRM` as the syslog identifier.
        "Nov 23 02:07:01 gpu-node-7 NVRM: NVRM: Xid (PCI:0001:00:00.0): 74, NVLink: fatal error",
        "Nov 23 02:07:01 gpu-node-7 kernel[0]: NVRM: Xid (PCI:0001:00:00.0): 74, NVLink: fatal error",
        "Nov 23 02:07:01 gpu-node-7 kernel: NVRM:NVRM:  Xid (PCI:0001:00:00.0): 74, NVLink: fatal error",
    ],
)
def test_journald_identifier_forms(line: str) -> None:
    event = parse_line(line)
    assert event is not None
    assert (event.kind, event.code, event.pci) == (EventKind.XID, 74, "0001:00:00.0")


@pytest.mark.parametrize(
    "line",
    [
        "Nov 23 02:09:12 gpu-node-7 nvidia-smi[4242]: GPU 00000000:3B:00.0 was successfully reset.",
        "Nov 23 02:09:12 gpu-node-7 gpuheal-reset: GPU 00000000:3B:00.0 was successfully reset.",
        "2026-11-23T02:09:12+0000 gpu-node-7 nvidia-smi[4242]: GPU 00000000:3B:00.0 was successfully reset.",
    ],
)
def test_nvidia_smi_reset_from_any_journal_identifier(line: str) -> None:
    event = parse_line(line)
    assert event is not None
    assert event.kind is EventKind.GPU_RESET
    assert event.pci_key == "0000:3b:00.0"


def test_line_endings_and_bytes() -> None:
    text = "[ 1.0] NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=a, Graphics Exception"
    for line in (text + "\n", text + "\r\n", (text + "\n").encode()):
        event = parse_line(line)
        assert event is not None
        assert event.raw == text
        assert event.message == "Graphics Exception"
    broken = b"[ 1.0] NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=\xff\xfe, Graphics \xc3Exception\n"
    event = parse_line(broken)
    assert event is not None
    assert event.process == "\ufffd\ufffd"
    assert "\ufffd" in event.message


@pytest.mark.parametrize(
    "line",
    [
        "",
        "NVRM:",
        "NVRM: NVRM: NVRM:",
        "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 18:56:32 UTC 2023",
        "[    5.123456] NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024",
        "[   12.000001] NVRM: GPU 0000:3b:00.0: RmInitAdapter failed! (0x26:0xffff:1482)",
        "NVRM: GPU Board Serial Number: 1653723052734",
        "NVRM: GPU 0000:91:00.0: GPU serial number is 1653723052734.",
        f"NVRM: GPU at PCI:0000:91:00: {UUID}",  # names a GPU; no event on its own
        "NVRM: A GPU crash dump has been created. If possible, please run",
        # Xid quoted inside some other program's message, or without the driver's prefix.
        "Nov 23 02:07:01 gpu-node-7 sshd[812]: NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.",
        "Nov 23 02:07:01 gpu-node-7 kernel: audit: type=1400 msg='NVRM: Xid (PCI:0000:3b:00): 79, x'",
        "[ 77.1] python3[900]: saw NVRM: Xid (PCI:0000:3b:00): 79, in the log",
        "Nov 23 02:07:01 gpu-node-7 kernel: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.",
        "Nov 23 02:07:01 gpu-node-7 systemd[1]: Started Xid exporter (PCI:0000:3b:00): 79 jobs.",
        "Nov 23 02:07:01 gpu-node-7 fabric[3]: SXid (PCI:0000:05:00.0): 20034, Fatal, copied from the kernel",
        # Malformed numbers.
        "NVRM: Xid (PCI:0000:3b:00): 7x9, pid=1, name=a, GPU has fallen off the bus.",
        "NVRM: Xid (PCI:0000:3b:00): , GPU has fallen off the bus.",
        "NVRM: Xid (PCI:0000:3b:00): -79, GPU has fallen off the bus.",
        "NVRM: Xid (PCI:0000:3b:00): 1234567, too many digits",
        "NVRM: Xid (PCI:0000:3b:00): ٧٩, Arabic-Indic digits",
        "NVRM: Xid (PCI:0000:3b:00): 0x4f, hex",
        "NVRM: Xid (PCI:0000:3b:00) 79, missing colon",
        # PCI addresses that aren't.
        "NVRM: Xid (PCI:zzzz:3b:00): 79, GPU has fallen off the bus.",
        "NVRM: Xid (PCI:0000:3b): 79, GPU has fallen off the bus.",
        "NVRM: Xid (PCI:0000:3b:00.9): 79, function above 7",
        "NVRM: Xid (PCI:0000:3b:g0): 79, device not hex",
        "NVRM: Xid (PCI:0000:3b:0): 79, device of one digit",
        "NVRM: Xid (PCI:123456789:3b:00): 79, domain wider than 32 bits",
        "NVRM: Xid (PCI:): 79, empty",
        "NVRM: GPU 0000:3g:00.0: GPU has fallen off the bus.",
        # SXid detail lines belong to the header before them.
        "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Severity 1 Engine instance 16 Sub-engine instance 00",
        "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Data {0x00000000, 0x00000010, 0x00000000}",
        # Resets that are neither the acknowledgement of a GPU reset nor its failure.
        "NVRM: GPU 0000:3b:00.0: GPU reset requested",
        "NVRM: GPU 0000:3b:00.0: GPU reset in progress, complete soon",
        "NVRM: GPU 0000:3b:00.0: GPU reset required before it can complete",
        # A parenthetical other than the reset method may qualify the success away.
        "NVRM: GPU 0000:3b:00.0: GPU reset (partial) complete",
        "NVRM: GPU 0000:3b:00.0: GPU reset (unrecoverable) complete",
        "NVRM: GPU 0000:3b:00.0: GPU reset (rc=-5) completed",
        "NVRM: GPU 0000:3b:00.0: GPU reset (status 0x1f) complete",
        "usb 1-1: reset high-speed USB device number 2 using xhci_hcd",
        "GPU 00000000:3B:00.0 was successfully reset, said nobody",
        # /dev/kmsg continuation lines and other kernel noise.
        " SUBSYSTEM=pci",
        " DEVICE=+pci:0000:3b:00.0",
        "6,1024,123456789,-;EXT4-fs (nvme0n1p2): mounted filesystem with ordered data mode.",
        "[ 4821.337154] nvidia-nvswitch0: ioctl done",
    ],
)
def test_lines_that_must_not_match(line: str) -> None:
    assert parse_line(line) is None
    assert KmsgParser().feed(line) is None


@pytest.mark.parametrize(
    "body",
    [
        "GPU reset did not complete",
        "GPU reset was not successful",
        "GPU reset timed out before it completed",
        "GPU reset failed to complete",
        "GPU reset could not be completed",
        "GPU reset couldn't complete",
        "GPU reset never completed",
        "GPU reset incomplete",
        "GPU reset unsuccessful",
        "GPU reset completed with errors",
        "GPU reset aborted before it completed",
    ],
)
def test_a_failed_gpu_reset_is_a_failure_never_an_acknowledgement(body: str) -> None:
    line = f"[ 812.5] NVRM: GPU 0000:3b:00.0: {body}"
    for event in (parse_line(line), KmsgParser().feed(line)):
        assert event is not None, line
        assert (event.kind, event.pci_key, event.fatal) == (EventKind.GPU_RESET_FAILED, "0000:3b:00.0", False)
        assert event.message == f"GPU 0000:3b:00.0: {body}"


@pytest.mark.parametrize(
    "line",
    [
        "GPU 00000000:3B:00.0 was not successfully reset.",
        "Nov 23 02:09:12 gpu-node-7 nvidia-smi[4242]: GPU 00000000:3B:00.0 was not successfully reset.",
    ],
)
def test_a_failed_nvidia_smi_reset_is_a_failure(line: str) -> None:
    event = parse_line(line)
    assert event is not None, line
    assert (event.kind, event.pci_key) == (EventKind.GPU_RESET_FAILED, "0000:3b:00.0")


def test_fallen_off_the_bus_report_is_one_event_naming_the_gpu() -> None:
    parser = KmsgParser()
    events = [event for line in FALLEN_OFF_GROUP if (event := parser.feed(line)) is not None]
    assert len(events) == 1
    (event,) = events
    assert (event.kind, event.fallen_off_bus) == (EventKind.XID, True)
    assert (event.code, event.pci, event.gpu_uuid, event.fatal, event.pid) == (79, "0000:91:00", UUID, True, None)


def test_fallen_off_halves_in_either_order_or_alone() -> None:
    xid = "NVRM: Xid (PCI:0000:91:00): 79, pid=0, name=, GPU has fallen off the bus."
    bus = "NVRM: GPU 0000:91:00.0: GPU has fallen off the bus."
    noise = "[ 1.0] eth0: link up"
    parser = KmsgParser()
    assert parser.feed(bus) is not None
    assert parser.feed(noise) is None
    assert parser.feed(xid) is None  # the XID half of the report already emitted
    assert parser.feed(bus) is not None  # a second report
    assert parser.feed(bus) is not None  # and a third: repeats are flood control's business
    only_bus = KmsgParser()
    assert only_bus.feed(bus) is not None


def test_fallen_off_halves_far_apart_are_two_reports() -> None:
    parser = KmsgParser()
    assert parser.feed("NVRM: Xid (PCI:0000:91:00): 79, GPU has fallen off the bus.") is not None
    for n in range(20):
        parser.feed(f"NVRM: Xid (PCI:0000:3b:00): 13, pid={n}, name=a, Graphics Exception")
    assert parser.feed("NVRM: GPU 0000:91:00.0: GPU has fallen off the bus.") is not None


def test_gpu_names_are_remembered_per_address_and_forgotten_on_reset() -> None:
    parser = KmsgParser()
    parser.feed(f"[ 1.0] NVRM: GPU at PCI:0000:91:00: GPU-{UUID[4:].upper()}")  # hex case varies
    assert parser.known_gpus() == {"0000:91:00.0": UUID}
    event = parser.feed("Nov 23 02:07:01 h kernel: NVRM: Xid (PCI:0000:91:00.0): 48, DBE")
    assert event is not None
    assert event.gpu_uuid == UUID
    other = parser.feed("NVRM: Xid (PCI:0000:3b:00): 48, DBE")
    assert other is not None
    assert other.gpu_uuid is None
    parser.reset()
    after = parser.feed("NVRM: Xid (PCI:0000:91:00): 48, DBE")
    assert after is not None
    assert after.gpu_uuid is None


@pytest.mark.parametrize(
    ("written", "key"),
    [
        ("0000:3b:00", "0000:3b:00.0"),
        ("0000:3b:00.0", "0000:3b:00.0"),
        ("00000000:3B:00.0", "0000:3b:00.0"),
        ("PCI:0001:00:00.0", "0001:00:00.0"),
        ("c3d2:00:1f.7", "c3d2:00:1f.7"),
        ("1c3d2:00:00.0", "1c3d2:00:00.0"),
        ("0000:3b:1f", "0000:3b:1f.0"),
        ("0000:3B:A0.0", "0000:3b:a0.0"),
        ("0000:3b:00.8", None),
        ("0000:3b:g0.0", None),
        ("0000:3b:123.0", None),
        ("0000:3b", None),
        ("gpu0", None),
        ("", None),
    ],
)
def test_pci_key(written: str, key: str | None) -> None:
    assert pci_key(written) == key
