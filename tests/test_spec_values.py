"""The schema's value ranges against plain arithmetic: the patterns that bound durations, ports and CIDRs
accept exactly what their consumers accept (Envoy's `gt: 0s`, cert-manager's minimums, ports 1-65535, the
Kubernetes API server's strict IPv4 CIDRs)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from typing import Any

import pytest

from compiler.spec.schema import schema_text

UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
HOUR_MS = UNIT_MS["h"]

# definition -> (schemas that hold it, least and most milliseconds it allows)
DURATIONS = {
    "duration": (("mesh", "service"), 0, 24 * HOUR_MS),
    "positive_duration": (("mesh", "service"), 1, 24 * HOUR_MS),
    "certificate_duration": (("mesh",), HOUR_MS, 87_600 * HOUR_MS),
    "renew_before": (("mesh",), 5 * UNIT_MS["m"], 87_600 * HOUR_MS),
}


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_text(name))
    return loaded


def matches(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text) is not None


def decimal(text: str) -> bool:
    """Digits without a leading zero (0 itself is fine): the only integers the patterns take."""
    return text.isdigit() and text.isascii() and (text == "0" or not text.startswith("0"))


def duration_samples(low: int, high: int) -> Iterator[str]:
    """Every small number, both sides of each bound in each unit, random numbers of every length, leading zeros."""
    draw = random.Random(7)
    for unit, size in UNIT_MS.items():
        numbers = set(range(0, 2000))
        for bound in (low, high):
            numbers |= {bound // size + delta for delta in range(-3, 4)}
        numbers |= {
            draw.randrange(10 ** (digits - 1), 10**digits) for digits in range(1, 14) for _ in range(40)
        }
        for number in sorted(n for n in numbers if n >= 0):
            yield f"{number}{unit}"
        yield f"0{low // size + 1}{unit}"


@pytest.mark.parametrize("definition", sorted(DURATIONS))
def test_duration_patterns_take_exactly_their_range(definition: str) -> None:
    names, low, high = DURATIONS[definition]
    for name in names:
        pattern = schema(name)["$defs"][definition]["pattern"]
        for text in duration_samples(low, high):
            number, unit = re.findall(r"^(\d+)(ms|s|m|h)$", text)[0]
            expected = decimal(number) and low <= int(number) * UNIT_MS[unit] <= high
            assert matches(pattern, text) == expected, (name, definition, text)


def test_host_port_patterns_take_ports_1_to_65535() -> None:
    properties = schema("mesh")["properties"]
    zookeeper = properties["datacenters"]["additionalProperties"]["properties"]["zookeeper"]["items"][
        "pattern"
    ]
    api_server = properties["clusters"]["additionalProperties"]["properties"]["api_server"]["pattern"]
    for port in [*map(str, range(0, 70_000)), "01", "00080", "999999"]:
        expected = decimal(port) and 1 <= int(port) <= 65_535
        assert matches(zookeeper, f"zk1.sjc.box.net:{port}") == expected, port
        assert matches(api_server, f"https://kube.box.net:{port}") == expected, port
    assert matches(api_server, "https://kube.box.net")  # the port is optional there, not in a ZooKeeper entry
    assert not matches(zookeeper, "zk1.sjc.box.net")


def test_cidr_pattern_takes_strict_ipv4_cidrs() -> None:
    properties = schema("mesh")["properties"]["clusters"]["additionalProperties"]["properties"]
    pattern = properties["network_policy"]["properties"]["off_cluster_cidrs"]["items"]["pattern"]
    parts = [*map(str, range(0, 300)), "00", "010", "0255", "1000"]
    prefixes = [*map(str, range(0, 40)), "00", "08", "032", "100"]
    for octet in parts:
        for text in (f"{octet}.0.0.0/8", f"10.{octet}.0.0/16", f"10.0.{octet}.0/24", f"10.0.0.{octet}/32"):
            assert matches(pattern, text) == (decimal(octet) and int(octet) <= 255), text
    for prefix in prefixes:
        assert matches(pattern, f"0.0.0.0/{prefix}") == (decimal(prefix) and int(prefix) <= 32), prefix
    for text in ("10.0.0/8", "10.0.0.0.0/8", "10.0.0.0", "10.0.0.0/", " 10.0.0.0/8", "::/0"):
        assert not matches(pattern, text), text


def patterns_without_message(node: Any, where: str) -> Iterator[str]:
    """Where a schema node has a pattern but no x-meshc-message: its error could only say 'is not allowed here'."""
    if isinstance(node, dict):
        if "pattern" in node and "x-meshc-message" not in node:
            yield where
        for key, value in node.items():
            yield from patterns_without_message(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from patterns_without_message(value, f"{where}/{index}")


@pytest.mark.parametrize("name", ["mesh", "service"])
def test_every_pattern_says_in_words_what_it_allows(name: str) -> None:
    # a regular expression is no message: `'/etc/my mesh' is not allowed here` left the fix to guess
    assert list(patterns_without_message(schema(name), name)) == []
