"""
A controller as Home Assistant's echonetlite integration is one: pychonet's
C{ECHONETAPIClient} over its own UDP server on port 3610, finding a node and
reading its low-voltage smart meter (0x028801).

    python pychonet_client.py NODE --local ADDRESS [--multicast] [--timeout S]

As the integration does: with C{--multicast}, a Get of the node profile's
instance list (D6) to 224.0.23.0 and the node taken from who answers (the
integration's discovery callback); then C{discover(NODE)} (8A, 8C, 83, D6 of
0x0EF001) until pychonet marks the node discovered, every instance's property
maps (9D, 9E, 9F), the meter's identification information (83, 8A), and the
meter's properties through pychonet's own class for it
(C{LowVoltageSmartElectricEnergyMeter.update}), which asks only for what the
node's Get map lists.

Prints one JSON object: the instances found, the node's identification
number, each meter EPC's raw EDT (hex) and pychonet's decoding of it, and the
frames the node sent (hex).  Every wait has a deadline; on failure one line
on stderr and exit status 1.
"""

import argparse
import asyncio
import json
import sys

from pychonet import ECHONETAPIClient
from pychonet.LowVoltageSmartElectricEnergyMeter import LowVoltageSmartElectricEnergyMeter
from pychonet.lib.const import ENL_GETMAP, ENL_SETMAP, ENL_STATMAP
from pychonet.lib.udpserver import UDPServer

METER = (0x02, 0x88, 0x01)
#: The meter's EPCs read: power, currents, both energy counters, coefficient, unit, digits.
EPCS = (0xE7, 0xE8, 0xE0, 0xE3, 0xD3, 0xE1, 0xD7)
#: pychonet's wait for one answer, in its tenths of a second.
ANSWER_WITHIN = 30
#: Frames from the node kept for the report.
FRAMES_KEPT = 60


class Failed(Exception):
    """The one-line reason the client gives up."""


class Client:
    """One pychonet API client and what it saw."""

    def __init__(self, local: str) -> None:
        self.udp = UDPServer(local_ip=local)
        self.udp.run("0.0.0.0", 3610, loop=asyncio.get_running_loop())
        self.api = ECHONETAPIClient(self.udp)
        # pychonet logs with print by default: stdout is for the JSON.
        self.api.configure(message_timeout=ANSWER_WITHIN, logger=self._log,
                           discover_callback=self._found)
        self.local = local
        self.announced: list = []
        self.frames: list = []
        self.udp.subscribe(self._frame)

    @staticmethod
    def _log(*args) -> None:
        print(*args, file=sys.stderr)

    async def _found(self, host: str) -> None:
        """pychonet's callback for a node it does not know: the integration's discovery."""
        if host != self.local and host not in self.announced:
            self.announced.append(host)

    async def _frame(self, data: bytes, addr) -> None:
        if addr[0] != self.local and len(self.frames) < FRAMES_KEPT:
            self.frames.append({"from": addr[0], "port": addr[1], "hex": data.hex()})

    async def multicast(self, node: str) -> None:
        """Get D6 to 224.0.23.0, again each second, until C{node} has answered."""
        while node not in self.announced:
            # pychonet's multicast Get never sees its own answer (it comes
            # from the node's address): the wait is its timeout, so short.
            self.api.configure(message_timeout=10)
            await self.api.discover()
        self.api.configure(message_timeout=ANSWER_WITHIN)

    async def discover(self, node: str) -> dict:
        """discover(NODE) until pychonet marks it discovered; @return: its state."""
        self.api.register_multicast(node)
        while not self.api.state.get(node, {}).get("discovered"):
            await self.api.discover(node)
            for _ in range(100):
                if self.api.state.get(node, {}).get("discovered"):
                    break
                await asyncio.sleep(0.01)
        return self.api.state[node]

    async def maps(self, node: str, state: dict) -> dict:
        """Every instance's property maps, as the integration reads them (three tries)."""
        found = {}
        for gc, classes in list(state["instances"].items()):
            for cc, instances in list(classes.items()):
                for ci in list(instances):
                    tries = 0
                    while await self.api.getAllPropertyMaps(node, gc, cc, ci) is False:
                        tries += 1
                        if tries > 2:
                            raise Failed(f"no property maps for {gc:02X}{cc:02X}{ci:02X}")
                    props = state["instances"][gc][cc][ci]
                    found[f"{gc:02X}{cc:02X}{ci:02X}"] = {
                        name: [f"{epc:02X}" for epc in props.get(code, [])]
                        for name, code in (("get", ENL_GETMAP), ("set", ENL_SETMAP),
                                           ("inf", ENL_STATMAP))}
        return found

    async def meter(self, node: str) -> dict:
        """The meter's identification and properties; @return: the report's part."""
        identified = await self.api.getIdentificationInformation(node, *METER)
        meter = LowVoltageSmartElectricEnergyMeter(node, self.api, METER[2])
        decoded = await meter.update(list(EPCS))
        props = self.api.state[node]["instances"][METER[0]][METER[1]][METER[2]]
        return {
            "identification_answered": bool(identified),
            "raw": {f"{epc:02X}": _hex(props.get(epc)) for epc in EPCS},
            "decoded": {f"{epc:02X}": decoded.get(epc) for epc in EPCS},
        }


def _hex(value):
    return value.hex() if isinstance(value, (bytes, bytearray)) else None


async def session(args) -> dict:
    client = Client(args.local)
    try:
        if args.multicast:
            await client.multicast(args.node)
        state = await client.discover(args.node)
        if (METER[0] not in state["instances"]
                or METER[1] not in state["instances"][METER[0]]):
            raise Failed(f"the node lists no smart meter: {state['instances']!r}")
        report = {
            "node": args.node,
            "announced": client.announced,
            "uid": state.get("uid"),
            "manufacturer": state.get("manufacturer"),
            "instances": await client.maps(args.node, state),
        }
        report.update(await client.meter(args.node))
        report["frames"] = client.frames
        return report
    finally:
        client.udp.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("node", help="the node's IPv4 address")
    parser.add_argument("--local", required=True, help="this side's IPv4 address")
    parser.add_argument("--multicast", action="store_true",
                        help="find the node by a multicast Get first")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    try:
        report = asyncio.run(asyncio.wait_for(session(args), args.timeout))
    except asyncio.TimeoutError:
        print(f"pychonet_client: no result within {args.timeout:.0f} s", file=sys.stderr)
        return 1
    except Failed as e:
        print(f"pychonet_client: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 (what pychonet raised, said in one line)
        print(f"pychonet_client: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    json.dump(report, sys.stdout, default=repr)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
