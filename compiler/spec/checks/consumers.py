"""Consumer rules the schema cannot state: values that each pass alone but that cert-manager, Nerve or the
Kubernetes API server rejects or misreads together (or, for a CIDR, once its bits are counted)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from typing import Any

from compiler.diagnostics import Diagnostic, error
from compiler.spec.model import Spec, duration_ms


def check_certificate_renewal(spec: Spec) -> Iterator[Diagnostic]:
    """renew_before is shorter than duration, the defaults included: cert-manager's webhook rejects a
    Certificate whose renewBefore is not (ValidateDuration), so no workload would get a certificate."""
    issuer = spec.mesh.issuer
    if duration_ms(issuer.renew_before) < duration_ms(issuer.duration):
        return
    written = _mapping(spec.documents[spec.mesh.file].data.get("certificates"))
    if "renew_before" in written:
        default = "" if "duration" in written else " (the default)"
        yield error(
            spec.at(spec.mesh.file, "certificates", "renew_before"),
            "certificate-renewal",
            f"certificates.renew_before {issuer.renew_before} is not shorter than duration {issuer.duration}"
            f"{default}, which cert-manager rejects; set renew_before below {issuer.duration} or raise duration",
        )
    else:  # only the default renew_before is in the way
        yield error(
            spec.at(spec.mesh.file, "certificates", "duration"),
            "certificate-renewal",
            f"certificates.duration {issuer.duration} is not longer than renew_before {issuer.renew_before} "
            f"(the default), which cert-manager rejects; raise duration or set renew_before below {issuer.duration}",
        )


def check_health_check_timing(spec: Spec) -> Iterator[Diagnostic]:
    """A health check's timeout is at most its interval, for the defaults and every service that sets either."""
    mesh_file = spec.mesh.file
    inherited: Mapping[str, Any] = spec.mesh.defaults["health_check"]
    written = _mapping(_mapping(spec.documents[mesh_file].data.get("defaults")).get("health_check"))
    yield from _timing(spec, mesh_file, ("defaults", "health_check"), written, inherited)
    for service in spec.checked():
        own = service.health_check
        yield from _timing(spec, service.file, ("health_check",), own, {**inherited, **own})


def _timing(
    spec: Spec, file: str, path: tuple[str, ...], written: Mapping[str, Any], effective: Mapping[str, Any]
) -> Iterator[Diagnostic]:
    """The finding for one health check, at the key it writes that is out of line (timeout before interval);
    none when it writes neither: what it inherits is reported where that is written."""
    timeout, interval = effective["timeout"], effective["interval"]
    culprit = next((key for key in ("timeout", "interval") if key in written), None)
    if culprit is None or duration_ms(timeout) <= duration_ms(interval):
        return
    yield error(
        spec.at(file, *path, culprit),
        "health-check-timing",
        f"{'.'.join(path)}: timeout {timeout} is longer than interval {interval}; a check must give up before "
        f"the next one is due: set timeout to at most {interval} or raise interval",
    )


def check_health_check_placement(spec: Spec) -> Iterator[Diagnostic]:
    """A service's own health_check is Nerve's, which runs on VMs only: on a service with no VM datacenter it
    would be silently ignored (a pod's readiness is its Deployment's readinessProbe, which meshc does not render)."""
    for service in spec.checked():
        if service.health_check and not service.vm_datacenters:
            yield error(
                spec.at(service.file, "health_check"),
                "health-check-vm-only",
                f"health_check has no effect on {service.name}, which runs on Kubernetes only: Nerve checks VM hosts; "
                "a pod's readiness is its Deployment's readinessProbe. Remove it, or set the probe in the Deployment",
            )


def check_cidr_host_bits(spec: Spec) -> Iterator[Diagnostic]:
    """An off-cluster CIDR has no bits set after its prefix: the API server's strict CIDR validation
    (StrictIPCIDRValidation) rejects `10.16.0.1/16` in a NetworkPolicy ipBlock, the lax one warns that it is
    ambiguous (the range 10.16.0.0/16, or the one host 10.16.0.1/32?)."""
    for name, cluster in spec.mesh.clusters.items():
        for index, cidr in enumerate(cluster.off_cluster_cidrs):
            network = ipaddress.IPv4Network(cidr, strict=False)  # the schema guarantees the form
            if str(network) != cidr:
                host = cidr.split("/")[0]
                yield error(
                    spec.at(spec.mesh.file, "clusters", name, "network_policy", "off_cluster_cidrs", index),
                    "invalid-cidr",
                    f"{cidr} has bits set after its /{network.prefixlen} prefix, which Kubernetes rejects in a "
                    f"NetworkPolicy; write the range {network}, or {host}/32 for that one host",
                )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
