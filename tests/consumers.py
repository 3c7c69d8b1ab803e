"""The `consumer` marker: tests that hand meshc's artifacts to a real consumer, and the guard that keeps it honest.

Real consumers: Puppet (and its Ruby), PuppetDB, Envoy (binary and xds-protos), kubernetes-validate and
the CRD schemas, Chromium with Mermaid, Graphviz. `pytest -m "not consumer"` (`make quick`) runs the rest;
the full suite runs everything. A test that reaches a consumer without the mark fails, so the quick run
never silently contains one (imported as `tests.consumers` only, so its state is one module's).
"""

from __future__ import annotations

import pytest

MARKER = "consumer"
DESCRIPTION = (
    "consumer: hands artifacts to a real consumer (Puppet, PuppetDB, Envoy, kubernetes-validate, CRDs, "
    "Chromium/Mermaid, Graphviz, xds-protos); deselect with -m 'not consumer' (make quick)"
)
# Fixtures that start or load a consumer, and tools (conftest.require_tool) that are one.
FIXTURES = frozenset({"puppetdb", "chromium", "schemas"})  # schemas: kubernetes-validate + CRDs
TOOLS = frozenset({"puppet", "ruby", "envoy", "openssl", "dot", "chromium", "npm"})

_running: list[pytest.Item] = []  # the test being set up or run: require_tool checks its mark


def unmarked(items: list[pytest.Item]) -> list[str]:
    """The tests that use a consumer's fixture without the `consumer` mark."""
    return [
        item.nodeid
        for item in items
        if FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker(MARKER) is None
    ]


def starting(item: pytest.Item) -> None:
    """Remember the test whose setup begins, for `check_tool`."""
    _running[:] = [item]


def check_tool(name: str) -> None:
    """Fail a test that runs consumer `name` without the `consumer` mark."""
    if name in TOOLS and _running and _running[0].get_closest_marker(MARKER) is None:
        pytest.fail(f"{_running[0].nodeid} runs {name}, a real consumer: mark it @pytest.mark.{MARKER}")
