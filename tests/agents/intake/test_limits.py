"""What the intake takes is what it can deliver: the largest event it accepts fits one Temporal payload.

Temporal refuses a signal whose input is over `limit.blobSize.error` (2 MiB by default) with
INVALID_ARGUMENT, which no retry can change; the intake therefore cuts free text down before it
says OK, and refuses lists and names it could only cut by changing what they mean.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from gpuheal.agents.intake import IntakeLimits, IntakeServer, IntakeSettings
from gpuheal.agents.publisher import Publisher, TemporalRemediations
from gpuheal.domain.faults import Fault
from gpuheal.domain.marks import workflow_id_for
from gpuheal.protos import health_event_pb2 as pb
from gpuheal.protos import health_event_pb2_grpc as pb_grpc
from gpuheal_sim.demo.devserver import DevServer
from tests.agents.intake.conftest import RecordingSink
from tests.agents.intake.test_intake import xid_event
from tests.agents.publisher.conftest import FAST

# Temporal's defaults (temporalio/temporal, common/dynamicconfig/constants.go): above the warning
# limit the server and the SDK log every payload; above the error limit the call is refused.
BLOB_SIZE_WARN = 512 * 1024
BLOB_SIZE_ERROR = 2 * 1024 * 1024
DEFAULTS = IntakeLimits()
# A control character: one byte on the wire, six ("\u0001") in the JSON payload, the worst case.
WORST = "\x01"
# Room left in a default-sized request for everything but the message.
_ENVELOPE = 256 * 1024


def largest_event(node: str, limits: IntakeLimits = DEFAULTS) -> pb.HealthEvent:
    """Every field of an XID event at the most the intake takes, in the costliest characters."""
    name = WORST * limits.max_name_bytes
    event = xid_event(
        nodeName=node,
        id=WORST * limits.max_name_bytes,
        agent=name,
        componentClass=name,
        checkName=name,
        message=WORST * (limits.max_message_bytes - _ENVELOPE),
    )
    del event.entitiesImpacted[:]
    event.entitiesImpacted.extend(
        pb.Entity(entityType="GPU_UUID", entityValue=name) for _ in range(limits.max_entities)
    )
    event.errorCode[:] = ["79", *(name for _ in range(limits.max_error_codes - 1))]
    event.metadata.clear()
    event.metadata.update({f"{index:0{limits.max_name_bytes}d}": name for index in range(limits.max_metadata_entries)})
    return event


def payload_size(fault: Fault) -> int:
    """Bytes of the signal's input as the client sends it (the converter every gpuheal client uses)."""
    return Payloads(payloads=pydantic_data_converter.payload_converter.to_payloads([fault])).ByteSize()


@contextlib.asynccontextmanager
async def intake_to(
    sink: RecordingSink | Publisher, socket_dir: Path
) -> AsyncIterator[pb_grpc.PlatformConnectorAsyncStub]:
    settings = IntakeSettings(socket_path=socket_dir / "limits.sock")
    async with IntakeServer(sink, settings) as server, grpc.aio.insecure_channel(server.socket_target) as channel:
        yield pb_grpc.PlatformConnectorStub(channel)


async def test_the_largest_event_accepted_fits_a_temporal_payload(socket_dir: Path) -> None:
    sink = RecordingSink()
    event = largest_event("gpu-node-1")
    async with intake_to(sink, socket_dir) as stub:
        await stub.HealthEventOccurredV1(pb.HealthEvents(events=[event]))

    (accepted,) = sink.events
    assert accepted.needs_remediation
    assert "… [truncated " in accepted.message
    assert payload_size(accepted.to_fault()) < BLOB_SIZE_WARN < BLOB_SIZE_ERROR


async def test_long_free_text_is_cut_deterministically_with_a_marker(socket_dir: Path) -> None:
    sink = RecordingSink()
    message = "é" * DEFAULTS.max_text_bytes  # two bytes each: twice the limit
    value = "v" * (2 * DEFAULTS.max_metadata_value_bytes)
    event = xid_event(message=message)
    event.metadata["dump"] = value
    async with intake_to(sink, socket_dir) as stub:
        await stub.HealthEventOccurredV1(pb.HealthEvents(events=[event, event]))

    first, second = sink.events
    assert (first.message, first.metadata) == (second.message, second.metadata)
    kept, marker = first.message.split("… [truncated ")
    assert set(kept) == {"é"}
    assert marker == f"{len(message.encode()) - len(kept.encode())} bytes]"
    assert len(first.message.encode()) <= DEFAULTS.max_text_bytes
    assert first.metadata["dump"].startswith("v" * 1024)
    assert first.metadata["dump"].endswith(" bytes]")
    assert len(first.metadata["dump"].encode()) <= DEFAULTS.max_metadata_value_bytes
    assert first.metadata["driver"] == "550.54"


async def test_a_maximal_event_starts_a_remediation_in_temporal(
    dev_server: DevServer, tmp_path: Path, socket_dir: Path
) -> None:
    node = f"limits-{uuid.uuid4().hex[:8]}"
    remediations = TemporalRemediations(dev_server.client, task_queue=f"limits-{uuid.uuid4()}")
    event = largest_event(node)
    try:
        async with Publisher(tmp_path / "spool", remediations=remediations, settings=FAST) as publisher:
            async with intake_to(publisher, socket_dir) as stub:
                await stub.HealthEventOccurredV1(pb.HealthEvents(events=[event]))
            assert publisher.pending() == {"temporal": 0}

        handle = dev_server.client.get_workflow_handle(workflow_id_for(node))
        assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
        (fault,) = await signalled_faults(dev_server, node)
        assert fault.event_id == event.id
        assert fault.message.startswith(WORST * 1024)
        assert "… [truncated " in fault.message
    finally:
        with contextlib.suppress(RPCError):
            await dev_server.client.get_workflow_handle(workflow_id_for(node)).terminate("test over")


async def signalled_faults(dev_server: DevServer, node: str) -> list[Fault]:
    history = await dev_server.client.get_workflow_handle(workflow_id_for(node)).fetch_history()
    faults: list[Fault] = []
    for item in history.events:
        if item.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            payloads = item.workflow_execution_signaled_event_attributes.input.payloads
            faults.extend(await dev_server.client.data_converter.decode(payloads, [Fault]))
    return faults


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("nodeName", "events[0].nodeName is 254 bytes; at most 253 are accepted"),
        ("id", "events[0].id is 257 bytes; at most 256 are accepted"),
        ("checkName", "events[0].checkName is 257 bytes; at most 256 are accepted"),
    ],
)
async def test_names_over_their_limit_are_refused(socket_dir: Path, field: str, expected: str) -> None:
    sink = RecordingSink()
    length = 254 if field == "nodeName" else DEFAULTS.max_name_bytes + 1
    async with intake_to(sink, socket_dir) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.HealthEventOccurredV1(pb.HealthEvents(events=[xid_event(**{field: "n" * length})]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == expected
    assert sink.events == []


@pytest.mark.parametrize(
    ("field", "count", "expected"),
    [
        ("entitiesImpacted", 12_000, "events[0].entitiesImpacted has 12000 entries; at most 64 are accepted"),
        ("errorCode", 65, "events[0].errorCode has 65 entries; at most 64 are accepted"),
        ("metadata", 65, "events[0].metadata has 65 entries; at most 64 are accepted"),
    ],
)
async def test_lists_over_their_limit_are_refused(socket_dir: Path, field: str, count: int, expected: str) -> None:
    # A healthy event naming 12,000 GPUs would cost the Device API lane a lookup and a write each.
    event = xid_event(isFatal=False, isHealthy=True, recommendedAction=pb.NONE)
    if field == "entitiesImpacted":
        event.entitiesImpacted.extend(
            pb.Entity(entityType="GPU_UUID", entityValue=f"GPU-{index:08d}") for index in range(count)
        )
        del event.entitiesImpacted[:2]  # exactly `count` of them
    elif field == "errorCode":
        event.errorCode[:] = [str(index) for index in range(count)]
    else:
        event.metadata.update({f"key-{index}": "v" for index in range(count - len(event.metadata))})
    sink = RecordingSink()
    async with intake_to(sink, socket_dir) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.HealthEventOccurredV1(pb.HealthEvents(events=[event]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == expected
    assert sink.events == []
