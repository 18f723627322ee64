"""The injector's node agent over real HTTP: what it writes to the kernel log, and what it refuses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gpuheal.tools.injector.agent import KEPT_FAULTS, InjectorAgentSettings, running_agent
from gpuheal.tools.injector.auth import Token
from gpuheal.tools.injector.client import InjectionFailed, inject_xid
from gpuheal.tools.injector.gpus import discover_gpus
from gpuheal.tools.injector.kmsg import KmsgWriteError, write_record
from tests.tools.injector.conftest import GPUS, TOKEN, RunningAgent, information, write_gpu


async def test_an_injection_writes_the_driver_line_for_the_gpu_and_lists_the_fault(injector: RunningAgent) -> None:
    status, answer = await injector.call("POST", "/inject-xid", {"fault_id": "test-001", "xid_type": 79, "gpu_id": 0})

    assert status == 200, answer
    line = "<3>NVRM: NVRM: Xid (PCI:0001:00:00.0): 79, GPU has fallen off the bus"
    assert injector.kmsg.read_text() == line + "\n"
    assert answer["fault_id"] == "test-001"
    assert (answer["xid"], answer["gpu"], answer["pci"], answer["line"]) == (79, 0, "0001:00:00.0", line)
    status, listed = await injector.call("GET", "/faults")
    assert status == 200
    [fault] = listed["faults"]
    assert fault == {key: answer[key] for key in ("fault_id", "xid", "gpu", "pci", "time", "line")}


async def test_an_eight_digit_pci_domain_and_a_catalog_xid_are_injected(injector: RunningAgent) -> None:
    status, answer = await injector.call("POST", "/inject-xid", {"fault_id": "f2", "xid_type": 92, "gpu_id": 1})

    assert status == 200, answer
    assert answer["line"].startswith("<3>NVRM: NVRM: Xid (PCI:00000002:00:00.0): 92, ")
    assert answer["line"].endswith(", EXCESSIVE_SBE_INTERRUPTS"), "an XID only the catalog knows carries its mnemonic"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"fault_id": "a", "xid_type": 9999, "gpu_id": 0}, "xid_type: XID 9999 is not in the XID catalog"),
        ({"fault_id": "a", "xid_type": 79, "gpu_id": 7}, "gpu_id: no GPU 7 on this node (GPUs: 0, 1, 2)"),
        ({"fault_id": "a", "xid_type": "79", "gpu_id": 0}, "xid_type: Input should be a valid integer"),
        ({"fault_id": "a", "xid_type": True, "gpu_id": 0}, "xid_type: Input should be a valid integer"),
        ({"fault_id": "a", "xid_type": 79, "gpu_id": -1}, "gpu_id: Input should be greater than or equal to 0"),
        ({"xid_type": 79, "gpu_id": 0}, "fault_id: Field required"),
        ({"fault_id": "a; reboot", "xid_type": 79, "gpu_id": 0}, "fault_id: String should match pattern"),
        ({"fault_id": "a" * 129, "xid_type": 79, "gpu_id": 0}, "fault_id: String should match pattern"),
        ({"fault_id": "a", "xid_type": 79, "gpu_id": 0, "pci": "x"}, "pci: Extra inputs are not permitted"),
        ([1, 2], "the body is not a JSON object"),
    ],
)
async def test_a_bad_injection_is_refused_with_422_naming_the_problem_and_writes_nothing(
    injector: RunningAgent, body: Any, reason: str
) -> None:
    status, answer = await injector.call("POST", "/inject-xid", body)

    assert status == 422
    assert answer["error"].startswith(reason), answer
    assert injector.kmsg.read_text() == ""
    assert injector.agent.faults == []


async def test_a_body_that_is_not_json_is_refused(injector: RunningAgent) -> None:
    async with injector.session.post(
        injector.url + "/inject-xid", data=b"xid=79", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as response:
        assert response.status == 422
        assert (await response.json())["error"] == "the body is not JSON"


async def test_a_fault_id_is_injected_once(injector: RunningAgent) -> None:
    body = {"fault_id": "once", "xid_type": 48, "gpu_id": 2}
    assert (await injector.call("POST", "/inject-xid", body))[0] == 200

    status, answer = await injector.call("POST", "/inject-xid", {**body, "gpu_id": 0})

    assert status == 409
    assert answer["error"] == "fault_id: 'once' was already injected"
    assert injector.kmsg.read_text().count("\n") == 1


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", ""])
async def test_every_call_but_health_needs_the_token(injector: RunningAgent, token: str | None) -> None:
    for method, path in [("POST", "/inject-xid"), ("GET", "/faults")]:
        status, answer = await injector.call(method, path, {"fault_id": "x", "xid_type": 79, "gpu_id": 0}, token)
        assert status == 401, (method, path)
        assert answer == {"error": "missing or wrong bearer token"}
    assert await injector.call("GET", "/health", token=token) == (200, {"status": "ok"})
    assert injector.kmsg.read_text() == ""


async def test_a_kernel_log_that_refuses_the_record_is_503_and_no_fault(tmp_path: Path) -> None:
    write_gpu(tmp_path / "gpus", "0000:3b:00.0", information(0))
    # A FIFO nobody reads: opening it to write without blocking fails at once.
    os.mkfifo(tmp_path / "kmsg")
    settings = InjectorAgentSettings(token=Token(TOKEN), port=0, kmsg=tmp_path / "kmsg", gpus_root=tmp_path / "gpus")
    async with running_agent(settings) as (agent, port):
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{port}/inject-xid",
                json={"fault_id": "f", "xid_type": 79, "gpu_id": 0},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as response,
        ):
            assert response.status == 503
            assert "the kernel log refused the record" in (await response.json())["error"]
        assert agent.faults == []


async def test_the_agent_listens_on_loopback_unless_told_otherwise() -> None:
    assert InjectorAgentSettings(token=Token(TOKEN)).host == "127.0.0.1"


def test_gpus_are_found_by_device_minor_and_anything_else_is_skipped(tmp_path: Path) -> None:
    for index, pci in GPUS.items():
        write_gpu(tmp_path, pci, information(index + 4))
    write_gpu(tmp_path, "not-a-pci", information(9))
    write_gpu(tmp_path, "0000:5e:00.0", "Model: \t\t NVIDIA H100\n")  # no Device Minor line
    (tmp_path / "0000:86:00.0").mkdir()  # no information file

    assert discover_gpus(tmp_path) == {4: "0001:00:00.0", 5: "00000002:00:00.0", 6: "0000:3b:00.0"}
    assert discover_gpus(tmp_path / "absent") == {}


def test_a_record_goes_out_in_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    (tmp_path / "kmsg").touch()
    write_record(tmp_path / "kmsg", "<3>NVRM: NVRM: Xid (PCI:0000:3b:00.0): 79, GPU has fallen off the bus")

    assert writes == [b"<3>NVRM: NVRM: Xid (PCI:0000:3b:00.0): 79, GPU has fallen off the bus\n"]


def test_a_short_write_or_an_oversized_record_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KmsgWriteError, match="one line of at most 976 bytes"):
        write_record(tmp_path / "kmsg", "<3>" + "x" * 1000)
    with pytest.raises(KmsgWriteError, match="one line"):
        write_record(tmp_path / "kmsg", "<3>a\n<3>b")
    (tmp_path / "kmsg").touch()
    monkeypatch.setattr(os, "write", lambda fd, data: len(data) - 1)
    with pytest.raises(KmsgWriteError, match="took 12 of the record's 13 bytes"):
        write_record(tmp_path / "kmsg", "<3>NVRM: xyz")
    with pytest.raises(KmsgWriteError, match=r"cannot open .*absent: No such file"):
        write_record(tmp_path / "absent", "<3>NVRM: xyz")


async def test_the_agent_remembers_a_bounded_number_of_faults(injector: RunningAgent) -> None:
    for number in range(KEPT_FAULTS + 1):
        assert (await injector.call("POST", "/inject-xid", {"fault_id": f"f{number}", "xid_type": 13, "gpu_id": 0}))[
            0
        ] == 200
    faults = injector.agent.faults
    assert len(faults) == KEPT_FAULTS
    assert faults[0].fault_id == "f1", "the oldest is forgotten first"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"fault_id": "a", "xid_type": ' + b"7" * 5000 + b', "gpu_id": 0}', "the body has a number of more than"),
        (b"[" * 30000 + b"]" * 30000, "the body is nested too deeply"),
        (b'{"fault_id": "a", "xid_type": 79, "xid_type": 13, "gpu_id": 0}', "the body names 'xid_type' twice"),
    ],
)
async def test_a_body_json_cannot_carry_safely_is_refused_with_422_naming_why(
    injector: RunningAgent, raw: bytes, reason: str
) -> None:
    async with injector.session.post(
        injector.url + "/inject-xid", data=raw, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as response:
        assert response.status == 422
        assert (await response.json())["error"].startswith(reason)
    assert injector.kmsg.read_text() == ""


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("GET", "/nowhere", None, 404, "Not Found: GET /nowhere"),
        ("DELETE", "/inject-xid", None, 405, "Method Not Allowed: DELETE /inject-xid"),
        ("POST", "/inject-xid", b"x" * (65 * 1024), 413, "Maximum request body size 65536 exceeded"),
    ],
)
async def test_every_error_is_a_json_object_naming_it(
    injector: RunningAgent, method: str, path: str, body: bytes | None, status: int, error: str
) -> None:
    async with injector.session.request(
        method, injector.url + path, data=body, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as response:
        assert response.status == status
        assert response.content_type == "application/json"
        assert (await response.json())["error"].startswith(error)


async def test_the_authorization_scheme_is_case_insensitive(injector: RunningAgent) -> None:
    for scheme in ("bearer", "BEARER", "Bearer"):
        async with injector.session.get(
            injector.url + "/faults", headers={"Authorization": f"{scheme} {TOKEN}"}
        ) as response:
            assert response.status == 200, scheme


async def test_a_rotated_token_file_is_taken_at_the_next_request(tmp_path: Path) -> None:
    """A mounted Secret changes under a running pod (kubelet swaps the file): the new token holds
    from then on and the old one no longer does, with no restart."""
    write_gpu(tmp_path / "gpus", "0000:3b:00.0", information(0))
    (tmp_path / "kmsg").touch()
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    settings = InjectorAgentSettings(
        token=Token.load(token_file), port=0, kmsg=tmp_path / "kmsg", gpus_root=tmp_path / "gpus"
    )
    async with running_agent(settings) as (_, port), aiohttp.ClientSession() as session:

        async def status(token: str) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(f"http://127.0.0.1:{port}/faults", headers=headers) as response:
                return response.status

        assert await status("first-token") == 200
        # As the kubelet does it: a new file put in place of the old in one rename.
        (tmp_path / "token.new").write_text("second-token\n")
        (tmp_path / "token.new").replace(token_file)
        assert (await status("second-token"), await status("first-token")) == (200, 401)
        # A file that goes bad keeps the last good token rather than lock everyone out.
        token_file.write_text("\n")
        assert await status("second-token") == 200


@pytest.mark.parametrize("token", ["tok\nen", "tok\x7fen"])
async def test_the_client_reports_a_request_aiohttp_will_not_send(injector: RunningAgent, token: str) -> None:
    """A token no header can carry, sent to a live server (the agent stands in for the API)."""
    with pytest.raises(InjectionFailed, match=r"cannot reach the injector API at .*: cannot send the request: "):
        await inject_xid(injector.url, token, "n", 79, 0)
