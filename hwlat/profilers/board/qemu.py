"""The emulated board: build the reference firmware (make + arm-none-eabi-gcc) and boot it in QEMU.

QEMU runs with ``-icount shift=0``: every guest instruction advances virtual time by 1 ns, which
makes counts deterministic and equal to instruction counts. QEMU models no pipeline, caches, flash
wait states or bus contention, so a count is instructions, not cycles; a latency from it is
instructions / nominal clock (an IPC-of-one estimate), not what the silicon would take.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hwlat.device_tables.errors import RuntimeUnavailableError
from hwlat.device_tables.files import os_reason
from hwlat.profilers.board.protocol import ProcessLink

log = logging.getLogger(__name__)

# QEMU machine -> (core, what it stands for)
MACHINES = {
    "mps2-an385": "cortex-m3",
    "mps2-an386": "cortex-m4",
    "mps2-an500": "cortex-m7",
}
TOOLCHAIN_HINT = "apt-get install -y --no-install-recommends gcc-arm-none-eabi libnewlib-arm-none-eabi"
QEMU_HINT = "apt-get install -y --no-install-recommends qemu-system-arm"


def firmware_dir() -> Path:
    """The firmware sources: $HWLAT_FIRMWARE_DIR, else ``firmware/`` of this source checkout (an installed
    hwlat has none)."""
    env = os.environ.get("HWLAT_FIRMWARE_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "firmware"
    if not (path / "Makefile").exists():
        where = f"{path} (from $HWLAT_FIRMWARE_DIR)" if env else f"{path} (an installed hwlat ships none)"
        raise RuntimeUnavailableError(f"firmware sources not found at {where}; set HWLAT_FIRMWARE_DIR to the "
                                      "firmware/ folder of a hwlat source checkout (a writable one: builds go to "
                                      "its build/)")
    return path


def missing_tools() -> list[str]:
    """Which of the toolchain, newlib and QEMU are absent (empty when the emulated board can run)."""
    missing = []
    if shutil.which("arm-none-eabi-gcc") is None:
        missing.append("arm-none-eabi-gcc (" + TOOLCHAIN_HINT + ")")
    elif not _has_newlib_nano():
        missing.append("newlib nano for arm-none-eabi (" + TOOLCHAIN_HINT + ")")
    if shutil.which("make") is None:
        missing.append("make (apt-get install make)")
    if shutil.which("qemu-system-arm") is None:
        missing.append("qemu-system-arm (" + QEMU_HINT + ")")
    return missing


def _has_newlib_nano() -> bool:
    try:
        out = subprocess.run(["arm-none-eabi-gcc", "-print-file-name=nano.specs"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return os.path.isabs(out) and os.path.exists(out)


@dataclass(frozen=True)
class FirmwareBuild:
    """A built firmware image and the facts that identify it."""

    elf: Path
    machine: str
    counter: str
    arena_kb: int
    opt: str
    text_bytes: int
    data_bytes: int
    bss_bytes: int

    @property
    def flash_bytes(self) -> int:
        return self.text_bytes + self.data_bytes

    def to_dict(self) -> dict:
        try:  # relative to the firmware folder: the same build reads the same on every machine
            elf = str(self.elf.relative_to(firmware_dir()))
        except (ValueError, RuntimeUnavailableError):
            elf = str(self.elf)
        return {"elf": elf, "machine": self.machine, "counter": self.counter, "arena_kb": self.arena_kb,
                "opt": self.opt, "flash_bytes": self.flash_bytes, "ram_static_bytes": self.data_bytes + self.bss_bytes}


DEFAULT_ARENA_KB, DEFAULT_OPT = 256, "-O2"  # the firmware's build settings by default; their image keeps its plain name


def build_firmware(machine: str = "mps2-an386", counter: str = "qemu", arena_kb: int = DEFAULT_ARENA_KB,
                   opt: str = DEFAULT_OPT) -> FirmwareBuild:
    """`make` the firmware for a board (incremental, serialised by a lock); the ELF and its sizes."""
    if machine not in MACHINES:
        raise RuntimeUnavailableError(f"no firmware port for board {machine!r}; known: {', '.join(MACHINES)}")
    missing = [m for m in missing_tools() if not m.startswith("qemu")]
    if missing:
        raise RuntimeUnavailableError("cannot build the board firmware, missing: " + "; ".join(missing))
    fw = firmware_dir()
    build = fw / "build"
    # One image per setting: a run with another arena or level would rebuild the image that a run beside
    # it boots again when its emulator restarts. The default one stays where the docs say.
    out = f"{machine}-{counter}" + ("" if (arena_kb, opt) == (DEFAULT_ARENA_KB, DEFAULT_OPT) else
                                    f"-arena{arena_kb}-{re.sub(r'[^A-Za-z0-9]+', '', opt)}")
    args = ["make", "-s", "-C", str(fw), f"BOARD={machine}", f"COUNTER={counter}", f"ARENA_KB={arena_kb}", f"OPT={opt}",
            f"BUILD=build/{out}"]
    try:
        build.mkdir(exist_ok=True)
        lock = open(build / ".lock", "w")
    except OSError as exc:
        raise RuntimeUnavailableError(f"cannot build the board firmware in {build}: {os_reason(exc)}; set "
                                      "HWLAT_FIRMWARE_DIR to a writable copy of the firmware/ folder") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeUnavailableError(f"firmware build failed ({' '.join(args)}):\n" + "\n".join(tail))
    elf = build / out / "hwlat-fw.elf"
    text, data, bss = _elf_sizes(elf)
    return FirmwareBuild(elf, machine, counter, arena_kb, opt, text, data, bss)


def _elf_sizes(elf: Path) -> tuple[int, int, int]:
    try:
        out = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True, timeout=30).stdout
        text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
        return text, data, bss
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        return 0, 0, 0


def qemu_version() -> str:
    try:
        out = subprocess.run(["qemu-system-arm", "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return "unknown"
    return out.splitlines()[0].strip() if out else "unknown"


def qemu_argv(elf: Path, machine: str, shift: int = 0) -> list[str]:
    """The emulator command line: no display, no monitor, UART0 on stdio, deterministic icount."""
    return ["qemu-system-arm", "-M", machine, "-display", "none", "-monitor", "none", "-serial", "stdio",
            "-icount", f"shift={shift}", "-kernel", str(elf)]


def start_qemu(build: FirmwareBuild) -> ProcessLink:
    """Boot the firmware in QEMU; the link is the board's UART0."""
    if shutil.which("qemu-system-arm") is None:
        raise RuntimeUnavailableError("qemu-system-arm not found: " + QEMU_HINT)
    argv = qemu_argv(build.elf, build.machine)
    log.info("starting %s", " ".join(argv))
    return ProcessLink(argv, name=f"qemu:{build.machine}")
