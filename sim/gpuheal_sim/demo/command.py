"""`gpuheal demo`: the command gpuheal-sim adds to the `gpuheal` CLI (the "demo" entry point of `gpuheal.commands`)."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import get_args

import click

from gpuheal.control.lifetime import ProcessRuntime
from gpuheal_sim.demo.load import Load
from gpuheal_sim.simulator.fleet import FleetConfig


@click.command()
@click.option("--nodes", default=4, show_default=True, type=click.IntRange(min=1), help="Simulated GPU nodes.")
@click.option("--gpus-per-node", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--xid", default=79, show_default=True, help="The XID injected on one node.")
@click.option(
    "--storm",
    default=0,
    type=click.IntRange(min=0),
    help="Inject the XID on this many nodes at once instead of one (the fleet grows to fit), "
    "under the fleet governor's --budget.",
)
@click.option(
    "--budget",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Remediations the fleet governor lets hold their nodes out of service at once.",
)
@click.option(
    "--load",
    type=click.Choice([load.value for load in Load]),
    help="Run gpuheal-eventgen on every node beside the fault, at the seed's per-node rate "
    "(light 0.02, medium 0.067, heavy 0.2 events/s; its mix's fatal XIDs remediate their nodes too); "
    "the live view shows the intakes' event rate.",
)
@click.option("--manual", is_flag=True, help="Wait for `gpuheal approve NODE --reason WHY` before repairing.")
@click.option("--keep", is_flag=True, help="Keep everything running afterwards, to explore the Temporal UI.")
@click.option("--reboot-seconds", default=2.0, show_default=True, help="How long a simulated reboot takes.")
@click.option("--state-dir", default=Path(".state/demo"), type=click.Path(path_type=Path), show_default=True)
@click.option("--port", default=7233, show_default=True, help="Temporal frontend port (a free one if taken).")
@click.option(
    "--provider",
    type=click.Choice(get_args(FleetConfig.model_fields["cloud"].annotation)),
    default="sim",
    show_default=True,
    help="Where the fleet lives: the nodes carry that cloud's machine identities and the reboot goes "
    "through its real SDK to the simulator's endpoint for it.",
)
@click.option(
    "--via",
    type=click.Choice(["kernel-log", "injector"]),
    default="kernel-log",
    show_default=True,
    help="How the XID reaches the node: written into its kernel log by the demo, or injected through the "
    "fault injector (its agents on the nodes and its central API, POST /api/v1/faults/gpu/inject/xid-<xid>).",
)
def demo(
    nodes: int,
    gpus_per_node: int,
    xid: int,
    storm: int,
    budget: int,
    load: str | None,
    manual: bool,
    keep: bool,
    reboot_seconds: float,
    state_dir: Path,
    port: int,
    provider: str,
    via: str,
) -> None:
    """Remediate a fatal XID on a simulated fleet, end to end, on an embedded Temporal dev server.

    With --storm N the XID strikes N nodes at once: the ones beyond --budget wait in AwaitingBudget,
    their nodes untouched, and the last line counts the most nodes out of service at once.
    """
    if storm and via == "injector":
        raise click.BadParameter("a storm writes its XIDs itself: leave out --via injector", param_hint="'--via'")
    if storm and manual:
        raise click.BadParameter("a storm's repairs run by themselves: leave out --manual", param_hint="'--storm'")
    if storm and load:
        raise click.BadParameter("a storm's nodes run no agents to load: leave out --load", param_hint="'--storm'")
    from gpuheal_sim.demo.lock import DemoAlreadyRunning, state_directory_lock
    from gpuheal_sim.demo.run import DemoOptions, run_demo

    logging.getLogger().setLevel(logging.WARNING)
    options = DemoOptions(
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        xid=xid,
        storm=storm,
        budget=budget,
        load=Load(load) if load else None,
        manual=manual,
        keep=keep,
        reboot_seconds=reboot_seconds,
        state_dir=state_dir,
        port=port,
        provider=provider,
        via=via,
    )
    if load:  # every node runs its agent, for its generator to send to
        options = dataclasses.replace(options, agents=nodes)
    try:
        with state_directory_lock(state_dir):
            code = ProcessRuntime().run(lambda: run_demo(options))
    except DemoAlreadyRunning as error:
        raise click.BadParameter(str(error), param_hint="'--state-dir'") from None
    except Exception as error:  # the demo's promise: a clear reason, not a traceback
        logging.getLogger("gpuheal_sim.demo").debug("demo failed", exc_info=True)
        raise click.ClickException(f"demo failed: {type(error).__name__}: {error}") from None
    sys.exit(code)
