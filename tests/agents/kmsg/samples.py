"""Kernel log lines as the NVIDIA driver, NVSwitch driver, nvidia-smi and the fault injector write them."""

from __future__ import annotations

from gpuheal.agents.kmsg.parser import KernelEvent, KmsgParser

UUID = "GPU-b6c3b2be-c55b-d076-fa0e-d464e4c7e08b"

# The same kernel message in every wrapping the parser accepts.
WRAPPINGS: dict[str, str] = {
    "bare": "{}",
    "kmsg": "3,812,6085126134786,-;{}",
    "kmsg_user_facility": "11,813,6085126134790,-;{}",  # what the injector's `<3>` write reads back as
    "kmsg_with_fields": "4,2201,9123456789,c,caller=T1234;{}",
    "proc_kmsg": "<3>{}",
    "dmesg": "[ 4821.337154] {}",
    "dmesg_T": "[Mon Nov 23 02:07:01 2026] {}",
    "dmesg_x": "kern  :err   : [ 4821.337154] {}",
    "dmesg_iso": "2026-11-23T02:07:01,337154+00:00 {}",
    "journald": "Nov 23 02:07:01 gpu-node-7 kernel: {}",
    "journald_with_printk_time": "Nov  3 02:07:01 gpu-node-7 kernel: [ 4821.337154] {}",
    "journald_precise": "Nov 23 02:07:01.337154 gpu-node-7 kernel: {}",
    "journald_iso": "2026-11-23T02:07:01+0000 gpu-node-7 kernel: {}",
    # A syslog line without its date and host, as some collectors forward kernel messages.
    "kernel_ident_with_printk_time": "kernel: [ 4821.337154] {}",
    "kernel_ident": "kernel: {}",
}

FALLEN_OFF_GROUP = [
    f"[6781741.548768] NVRM: GPU at PCI:0000:91:00: {UUID}",
    "[6781741.548776] NVRM: GPU Board Serial Number: 1653723052734",
    "[6781741.548779] NVRM: Xid (PCI:0000:91:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
    "[6781741.548783] NVRM: GPU 0000:91:00.0: GPU has fallen off the bus.",
    "[6781741.548786] NVRM: GPU 0000:91:00.0: GPU serial number is 1653723052734.",
]

# Valid lines of every kind, for fuzzing by mutation and for the CLI and benchmark.
VALID_LINES = [
    "NVRM: Xid (PCI:0000:3b:00): 79, pid=0, name=, GPU has fallen off the bus.",
    "[ 4821.337154] NVRM: Xid (PCI:0000:cb:00): 13, pid='<unknown>', name=<unknown>, Graphics SM Warp Exception on (GPC 7, TPC 7, SM 0): Illegal Instruction Parameter",
    "3,812,6085126134786,-;NVRM: Xid (PCI:0000:cb:00): 109, pid=1797828, name=pt_main_thread, Ch 00000008, errorString CTX SWITCH TIMEOUT, Info 0x58005",
    "11,813,6085126134790,-;NVRM: NVRM: Xid (PCI:0001:00:00.0): 79, GPU has fallen off the bus",
    "Nov 23 02:07:01 gpu-node-7 kernel: NVRM: Xid (0000:3b:00): 31, Ch 00000008, intr 10000000. MMU Fault",
    "Nov 23 02:07:01 gpu-node-7 kernel: [ 4821.337154] NVRM: Xid (PCI:0000:3b:00): 154, pid=1, name=x, GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)",
    "nvidia-nvswitch3: SXid (PCI:0000:c6:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error (First)",
    "[ 99.1] nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Fatal, Link 30 LTSSM Fault Up",
    "[ 1.0] NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.",
    "NVRM: The NVIDIA GPU 0000:3b:00.0 (PCI ID: 10de:1db4) installed in this system has fallen off the bus and is not responding to commands.",
    f"NVRM: GPU at PCI:0000:91:00: {UUID}",
    "NVRM: GPU 0000:3b:00.0: GPU reset complete",
    "Nov 23 02:09:12 gpu-node-7 nvidia-smi[4242]: GPU 00000000:3B:00.0 was successfully reset.",
]

# Kernel messages with no wrapping at all, to wrap in each of WRAPPINGS.
BARE_LINES = [
    "NVRM: Xid (PCI:0000:3b:00): 79, pid=0, name=, GPU has fallen off the bus.",
    "NVRM: NVRM: Xid (PCI:0001:00:00.0): 79, GPU has fallen off the bus",
    "NVRM: Xid (PCI:0000:cb:00): 109, pid=1797828, name=pt_main_thread, Ch 00000008, errorString CTX SWITCH TIMEOUT",
    "NVRM: Xid (0000:3b:00): 31, Ch 00000008, intr 10000000. MMU Fault",
    "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Fatal, Link 30 LTSSM Fault Up",
    "NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.",
    "NVRM: GPU 0000:3b:00.0: GPU reset complete",
    "GPU 00000000:3B:00.0 was successfully reset.",
]


def parse_line(line: str | bytes) -> KernelEvent | None:
    """What one line reports on its own: a fresh parser has learned no GPU names and no fallen-off half."""
    return KmsgParser().feed(line)
