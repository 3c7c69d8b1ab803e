"""Policy checks: what a dependency sets reaches Envoy, and retries fit in the request timeout."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from compiler.diagnostics import Diagnostic, error, quote
from compiler.spec.model import Spec, deep_merge, duration_ms

# Policy keys only an HTTP route can apply: Envoy's tcp_proxy has no request timeout, no per-try
# timeout and no retry conditions (it retries connecting, `retries.attempts` times, and nothing else).
TCP_IGNORED = (("timeout",), ("retries", "per_try_timeout"), ("retries", "on"))


def check_tcp_policy(spec: Spec) -> Iterator[Diagnostic]:
    """A dependency on a `tcp` service sets no HTTP-only policy key, which would never reach Envoy."""
    for service in spec.checked():
        for dep in service.dependencies:
            server = spec.services.get(dep.service)
            if server is None or server.protocol != "tcp":
                continue
            for path in TCP_IGNORED:
                holder = dep.overrides.get(path[0]) if len(path) > 1 else dep.overrides
                if isinstance(holder, Mapping) and path[-1] in holder:
                    yield error(
                        spec.key_at(service.file, "dependencies", dep.index, *path),
                        "tcp-http-policy",
                        f"{'.'.join(path)} has no effect on {quote(dep.service)}, a tcp service: Envoy's TCP proxy "
                        "has no request timeout or retry conditions; remove it (tcp takes connect_timeout and "
                        "retries.attempts, the number of connection attempts)",
                    )


def check_retry_budget(spec: Spec) -> Iterator[Diagnostic]:
    """Per-try timeout × attempts fits in the request timeout, for the defaults and every overriding edge."""
    message = _budget_problem(spec.mesh.defaults)
    if message:
        yield error(spec.key_at(spec.mesh.file, "defaults"), "retry-budget", f"defaults: {message}")
        return
    for service in spec.checked():
        for dep in service.dependencies:
            server = spec.services.get(dep.service)
            if dep.overrides and (
                server is None or server.protocol != "tcp"
            ):  # tcp: no request timeout to budget
                message = _budget_problem(deep_merge(spec.mesh.defaults, dep.overrides))
                if message:
                    yield error(dep.span, "retry-budget", f"dependency {quote(dep.service)}: {message}")


def _budget_problem(policy: Mapping[str, Any]) -> str | None:
    retries = policy["retries"]
    per_try, attempts, timeout = (
        duration_ms(retries["per_try_timeout"]),
        retries["attempts"],
        duration_ms(policy["timeout"]),
    )
    if per_try * attempts <= timeout:
        return None
    return (
        f"{attempts} attempts × {retries['per_try_timeout']} per try = {per_try * attempts}ms exceeds the timeout "
        f"{policy['timeout']}; set per_try_timeout to at most {timeout // attempts}ms or raise timeout"
    )
