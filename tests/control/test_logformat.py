"""`--log-format json`: each record is one line of JSON with the fields a log pipeline indexes."""

from __future__ import annotations

import io
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner

from gpuheal import cli
from gpuheal.control.logformat import JsonLines, name_node_on_every_line
from gpuheal.domain.marks import workflow_id_for


def line(message: str = "quarantined gpu-node-001", *args: object, exc_info: Any = None, **extra: Any) -> str:
    record = logging.getLogger("gpuheal.test").makeRecord(
        "gpuheal.test", logging.WARNING, __file__, 1, message, args, exc_info, extra=extra
    )
    return JsonLines().format(record)


def test_a_record_is_one_line_with_time_level_logger_and_message() -> None:
    text = line()
    entry = json.loads(text)

    assert "\n" not in text
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "gpuheal.test"
    assert entry["message"] == "quarantined gpu-node-001"
    assert entry["time"].endswith("Z"), "RFC 3339 in UTC"
    assert abs(datetime.fromisoformat(entry["time"]) - datetime.now(UTC)).total_seconds() < 60
    assert {"workflow_id", "node", "gpu", "exc_info"}.isdisjoint(entry), "nothing is made up where nothing is known"


def test_an_activity_line_names_its_remediation_and_node() -> None:
    details = {"activity_id": "3", "activity_type": "quarantine", "workflow_id": workflow_id_for("gpu-node-001")}

    entry = json.loads(line(temporal_activity=details))

    assert entry["workflow_id"] == "remediate-gpu-node-001"
    assert entry["node"] == "gpu-node-001"


def test_a_workflow_line_of_another_workflow_names_no_node() -> None:
    entry = json.loads(line(temporal_workflow={"workflow_id": "gpuheal-governor-gpuheal", "run_id": "r"}))

    assert entry["workflow_id"] == "gpuheal-governor-gpuheal"
    assert "node" not in entry


def test_an_agent_line_carries_its_node_and_gpus() -> None:
    entry = json.loads(line(node="gpu-node-007", gpu=("GPU-1", "GPU-2")))

    assert (entry["node"], entry["gpu"]) == ("gpu-node-007", ["GPU-1", "GPU-2"])


def test_an_exception_is_one_text_field() -> None:
    try:
        raise ValueError("the driver said no")
    except ValueError:
        text = line("reset failed", exc_info=sys.exc_info())

    entry = json.loads(text)
    assert "\n" not in text
    assert entry["message"] == "reset failed"
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert entry["exc_info"].endswith("ValueError: the driver said no")


def test_non_ascii_text_stays_readable() -> None:
    text = line("Knoten %s: Grafikprozessor gestört ✗", "gpu-node-ü")

    assert "gestört ✗" in text
    assert json.loads(text)["message"] == "Knoten gpu-node-ü: Grafikprozessor gestört ✗"


def test_an_agent_process_names_its_node_on_every_line_that_names_none() -> None:
    root = logging.getLogger()
    kept = root.handlers[:]
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLines())
    root.handlers = [handler]
    try:
        name_node_on_every_line("gpu-node-003")
        logging.getLogger("gpuheal.agents.lane").warning("temporal lane: retrying")
        logging.getLogger("gpuheal.agents.sink").warning("fault", extra={"node": "gpu-node-009"})
    finally:
        root.handlers = kept

    first, second = (json.loads(text) for text in out.getvalue().splitlines())
    assert first["node"] == "gpu-node-003"
    assert second["node"] == "gpu-node-009", "a line that names its node keeps it"


def test_gpu_is_always_a_list_of_strings() -> None:
    assert json.loads(line(gpu="GPU-1"))["gpu"] == ["GPU-1"], "one UUID is a list of one"
    assert json.loads(line(gpu={"GPU-b", "GPU-a"}))["gpu"] == ["GPU-a", "GPU-b"], "a set, in a stable order"
    assert json.loads(line(gpu=["GPU-2", "GPU-1"]))["gpu"] == ["GPU-2", "GPU-1"], "a list keeps its order"
    assert "gpu" not in json.loads(line(gpu=""))
    assert "gpu" not in json.loads(line(gpu=[]))


def test_values_json_cannot_hold_still_give_strict_json() -> None:
    text = line("temperature %s", float("nan"), node=float("nan"), gpu=[float("inf"), 3])

    # Strict JSON (no NaN or Infinity tokens), which json.loads would otherwise accept.
    entry = json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} is not JSON"))
    assert (entry["message"], entry["node"], entry["gpu"]) == ("temperature nan", "nan", ["inf", "3"])


def test_a_mapping_with_keys_json_cannot_hold_is_text() -> None:
    entry = json.loads(line(node={("rack", 1): "gpu-node-001"}, gpu={0: "GPU-1"}))

    assert entry["node"] == "{('rack', 1): 'gpu-node-001'}"
    assert entry["gpu"] == ["0"]


def test_arguments_that_do_not_fit_the_message_still_give_a_line() -> None:
    entry = json.loads(line("reset %d of %d", "GPU-1"))

    assert entry["message"] == "reset %d of %d ('GPU-1',)"


def test_a_stack_is_one_text_field() -> None:
    record = logging.getLogger("gpuheal.test").makeRecord(
        "gpuheal.test", logging.WARNING, __file__, 1, "here", (), None, sinfo="Stack (most recent call last):\n  x"
    )

    entry = json.loads(JsonLines().format(record))
    assert entry["stack_info"] == "Stack (most recent call last):\n  x"


@pytest.mark.parametrize(("flags", "env"), [(["--log-format", "Json"], {}), ([], {"GPUHEAL_LOG_FORMAT": "JSON"})])
def test_the_format_is_chosen_whatever_its_case(
    flags: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen: list[int] = []
    monkeypatch.setattr(cli, "log_as_json", chosen.append)

    result = CliRunner().invoke(cli.main, [*flags, "search-attributes", "--help"], env=env)

    assert result.exit_code == 0, result.output
    assert chosen == [logging.INFO]
