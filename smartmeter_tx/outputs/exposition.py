"""
The Prometheus text exposition format (version 0.0.4), written here: the
service's C{/metrics} is a few dozen gauges and counters of one sample or a
label each, which needs no client library (and its thirty modules in
memory for the service's lifetime).  Pure.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple, Optional, Union

__all__ = ["CONTENT_TYPE", "Family", "gauge", "counter", "exposition"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Number = Union[int, float]


class Family(NamedTuple):
    """
    One metric family.

    @ivar kind: C{"gauge"} or C{"counter"} (its name ends in C{_total}).
    @ivar samples: C{(labels, value)} pairs; C{labels} a tuple of
        C{(name, value)}; no sample when nothing is known.
    """

    name: str
    kind: str
    help: str
    samples: tuple


def gauge(name: str, help: str, value: Optional[Number]) -> Family:
    """A gauge of one sample, or of none when C{value} is C{None}."""
    return Family(name, "gauge", help, () if value is None else (((), value),))


def counter(name: str, help: str, value: Optional[Number]) -> Family:
    """A counter named C{NAME_total}, of one sample or of none (C{None})."""
    if not name.endswith("_total"):
        name += "_total"
    return Family(name, "counter", help, () if value is None else (((), value),))


def _number(value: Number) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(families: Iterable[Family]) -> bytes:
    """The text of C{families}, in their order, as C{/metrics} serves it."""
    lines = []
    for name, kind, help, samples in families:
        lines.append(f"# HELP {name} {_help(help)}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                inner = ",".join(f'{k}="{_label(str(v))}"' for k, v in labels)
                lines.append(f"{name}{{{inner}}} {_number(value)}")
            else:
                lines.append(f"{name} {_number(value)}")
    lines.append("")
    return "\n".join(lines).encode("utf-8")
