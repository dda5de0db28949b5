"""
A virtual Wi-SUN module (SKSTACK IP, standard and DSE dialects) and a virtual
low-voltage smart meter (ECHONET Lite 0x028801), served on a pty.

 - L{start_emulator} / L{EmulatorHandle}: the C{emulator:} device in-process.
 - L{Emulator}, L{EmulatorConfig}: the module + radio + meter, usable with any
   transport (tests drive L{ModuleProtocol} over a StringTransport).
 - C{smartmeter-emulator}: the command (L{smartmeter_tx.emulator.cli}).

Nothing in the product imports this package except the C{emulator:} device
handling, the command and tests.
"""

from smartmeter_tx.emulator.device import EmulatorHandle, parse_spec, start_emulator
from smartmeter_tx.emulator.meter import MeterModel, TruthRecord
from smartmeter_tx.emulator.module import (
    DEFAULT_ID, DEFAULT_PASSWORD, Emulator, EmulatorConfig, ModuleProtocol,
)

__all__ = [
    "start_emulator", "parse_spec", "EmulatorHandle", "Emulator", "EmulatorConfig",
    "ModuleProtocol", "MeterModel", "TruthRecord", "DEFAULT_ID", "DEFAULT_PASSWORD",
]
