"""
C{smartmeter-history --ha-url}: the slots read (from the meter, or from a
running service) imported into Home Assistant's long-term statistics, and
one line on stdout saying what was written.

Exit codes beyond the plugin's: 69 HA cannot be reached, 76 HA refused a
command (its code and message on stderr), 78 HA refused the access token;
2 for C{https://} to an HA that answers plain HTTP.
"""

from __future__ import annotations

import datetime
import importlib.util
from typing import Optional

from smartmeter_tx.cli import common as C
from smartmeter_tx.cli import options as O
from smartmeter_tx.errors import ConfigError, FrameError, SmartMeterError

__all__ = ["EXIT_HA_UNREACHABLE", "EXIT_HA_REFUSED", "EXIT_CONFIG", "check_ready",
           "import_records", "summary"]

EXIT_HA_UNREACHABLE = 69
EXIT_HA_REFUSED = 76
EXIT_CONFIG = 78

def check_ready(url: str, token: Optional[str]) -> None:
    """
    Before any radio work: the extra is installed, the URL is one, a token
    was given.

    @raise C.UsageError: one line saying what is missing.
    """
    if importlib.util.find_spec("autobahn") is None:
        raise C.UsageError(O.missing_extra("--ha-url", "homeassistant", "autobahn"))
    from smartmeter_tx.outputs.homeassistant.websocket import websocket_url
    try:
        websocket_url(url)
    except ConfigError as e:
        raise C.UsageError(str(e)) from None
    if not token:
        raise C.UsageError("--ha-url needs an access token: --ha-token-file FILE or "
                           "$SMARTMETER_HA_TOKEN")


def summary(done, slug: str) -> str:
    """The one line on stdout: hours written, first and last hour (JST)."""
    from smartmeter_tx.outputs.homeassistant import statistics as S
    hours = done.hours.get(S.statistic_id(slug, "import"), 0)
    line = f"imported {hours} hours into {S.statistic_id(slug, 'import')}"
    export = done.hours.get(S.statistic_id(slug, "export"))
    if export is not None:
        line += f" and {export} into {S.statistic_id(slug, 'export')}"
    if done.first is None:
        return line + ": no complete hour in the meter's record"
    return line + f", {done.first:%Y-%m-%d %H:%M} to {done.last:%Y-%m-%d %H:%M} JST"


async def import_records(reactor, url: str, token: str, records: list, mac: Optional[str],
                         stdout, stderr, program: str, tariff=None, modulus=None) -> int:
    """
    Import the slots of C{records} (the data log's history records) for the
    meter whose MAC is C{mac}, rewriting their range in HA.

    @return: the exit code.
    """
    from smartmeter_tx.model import JST, HistorySlot
    from smartmeter_tx.outputs.homeassistant import statistics as S
    from smartmeter_tx.outputs.homeassistant import sync
    from smartmeter_tx.outputs.homeassistant import websocket as W

    slug = S.slug_for(mac)
    if slug is None:
        C.say(stderr, "the meter's MAC address is not known, so its statistics cannot be "
                      "named; run once without --ha-url (or --scan) first", program)
        return C.EXIT_NO_READING
    slots = []
    for record in records:
        try:
            slots.append(HistorySlot.from_record(record))
        except FrameError:
            continue
    try:
        session = await W.connect(reactor, url, token)
    except W.HaAuthError as e:
        C.say(stderr, str(e), program)
        return EXIT_CONFIG
    except W.HaWrongScheme as e:  # https:// for a plain HA: the URL given is wrong
        C.say(stderr, str(e), program)
        return C.EXIT_USAGE
    except W.HaUnreachable as e:
        C.say(stderr, str(e), program)
        return EXIT_HA_UNREACHABLE
    try:
        done = await sync.synchronize(session, slots, slug, datetime.datetime.now(JST),
                                      rewrite=True, tariff=tariff, modulus=modulus)
    except W.HaError as e:
        C.say(stderr, str(e), program)
        return EXIT_HA_REFUSED
    except SmartMeterError as e:  # the connection ended
        C.say(stderr, str(e), program)
        return EXIT_HA_UNREACHABLE
    finally:
        await session.close_and_wait(reactor)
    stdout.write(summary(done, slug) + "\n")
    stdout.flush()
    return C.EXIT_OK
