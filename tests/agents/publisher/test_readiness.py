"""The publisher's part in the agent's readiness and metrics: a fault moved aside waits for a person."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from gpuheal.agents.publisher import Publisher
from gpuheal.agents.publisher.metrics import SpoolCollector
from tests.agents.publisher.events import fatal_xid, non_fatal
from tests.agents.publisher.test_lane import SETTINGS, SwitchableRemediations

PROBLEM = (
    "temporal: 1 actionable events could not be read from the spool and lie moved aside (*.a.json.bad): "
    "no remediation until a person acts"
)


def metrics(publisher: Publisher) -> str:
    registry = CollectorRegistry()
    registry.register(SpoolCollector(publisher.spool_stats))
    return generate_latest(registry).decode()


async def test_a_fault_moved_aside_keeps_the_agent_unready_until_a_person_acts(tmp_path: Path) -> None:
    spool = tmp_path / "temporal"
    spool.mkdir()
    (spool / "000000000001.a.json").write_text("{torn by a dying disk")
    (spool / "000000000002.n.json").write_text("{chatter, which nobody needs to look at")
    backend = SwitchableRemediations()
    backend.up.set()
    later = fatal_xid("n")
    async with Publisher(tmp_path, remediations=backend, settings=SETTINGS) as publisher:
        await publisher.submit(later)
        await asyncio.wait_for(publisher.wait_delivered(), 5)
        assert backend.accepted == [later.id], "the lane goes on"
        assert publisher.problems() == [PROBLEM]
        assert 'gpuheal_agent_spool_faults_moved_aside{lane="temporal"} 1.0' in metrics(publisher)

    async with Publisher(tmp_path, remediations=backend, settings=SETTINGS) as publisher:
        assert publisher.problems() == [PROBLEM], "a restart does not deliver it"
    # A person reads it and deletes it (or renames it back to 000000000001.a.json to have it delivered).
    (spool / "000000000001.a.json.bad").unlink()
    async with Publisher(tmp_path, remediations=backend, settings=SETTINGS) as publisher:
        assert publisher.problems() == []
        await publisher.submit(non_fatal("n"))
        assert 'gpuheal_agent_spool_faults_moved_aside{lane="temporal"} 0.0' in metrics(publisher)
