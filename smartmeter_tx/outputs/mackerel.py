"""
Mackerel agent plugin output: metric lines and graph-definition meta.

Pure: no Twisted, no I/O.  The agent splits each line on whitespace into
name, value and epoch seconds; it reads the meta (when
C{MACKEREL_AGENT_PLUGIN_META} is non-empty) as a C{# mackerel-agent-plugin}
header followed by one JSON document.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Union

from smartmeter_tx.model import Reading, is_absent
from smartmeter_tx.errors import ArgumentError

__all__ = ["format_metrics", "graph_definitions", "format_meta", "check_prefix"]

_NAME_RE = re.compile(r"^[-a-zA-Z0-9_.]+$")


def check_prefix(prefix: str) -> str:
    """
    @raise ArgumentError: C{prefix} is not a valid Mackerel metric name part.
    """
    if not prefix or not _NAME_RE.match(prefix) or prefix.startswith(".") or prefix.endswith("."):
        raise ArgumentError("--metric-key-prefix may only hold letters, digits, '-', '_' and '.'")
    return prefix


def _number(value: Union[int, Decimal]) -> str:
    if isinstance(value, Decimal):
        text = format(value, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text or "0"
    return str(int(value))


def format_metrics(prefix: str, reading: Reading, timestamp: int, energy: bool = False) -> list:
    """
    The metric lines for one reading, in a fixed order.  A value the meter
    reported as absent (no data, overflow, a missing phase) is left out: it is
    never printed as 0.

    @return: lines without the trailing newline.
    """
    rows = [
        ("power.value", reading.power_w),
        ("current.r", reading.current_r_a),
        ("current.t", reading.current_t_a),
    ]
    if energy:
        rows += [
            ("energy.normal", reading.energy_normal_kwh),
            ("energy.reverse", reading.energy_reverse_kwh),
        ]
    return [f"{prefix}.{name}\t{_number(value)}\t{int(timestamp)}"
            for name, value in rows if value is not None and not is_absent(value)]


def graph_definitions(prefix: str, energy: bool = False) -> dict:
    """
    The graph definitions, keyed as the agent expects (prefix.key).
    """
    graphs = {
        f"{prefix}.power": {
            "label": "Smart meter: instantaneous power [W]",
            "unit": "integer",
            "metrics": [{"name": "value", "label": "Power [W]", "stacked": False}],
        },
        f"{prefix}.current": {
            "label": "Smart meter: instantaneous current [A]",
            "unit": "float",
            "metrics": [
                {"name": "r", "label": "R phase [A]", "stacked": True},
                {"name": "t", "label": "T phase [A]", "stacked": True},
            ],
        },
    }
    if energy:
        graphs[f"{prefix}.energy"] = {
            "label": "Smart meter: cumulative energy [kWh]",
            "unit": "float",
            "metrics": [
                {"name": "normal", "label": "Bought (normal direction) [kWh]", "stacked": False},
                {"name": "reverse", "label": "Sold (reverse direction) [kWh]", "stacked": False},
            ],
        }
    return {"graphs": graphs}


def format_meta(prefix: str, energy: bool = False) -> str:
    """
    The whole meta output: the header line and the JSON document.
    """
    return "# mackerel-agent-plugin\n" + json.dumps(graph_definitions(prefix, energy),
                                                    sort_keys=True) + "\n"
