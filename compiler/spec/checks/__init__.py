"""Semantic checks of a schema-valid spec: an ordered tuple of small functions, one code each.

The checks live in modules by what they look at: references, ports, placement, policy, waves, the sidecar
directories, and the consumers' rules that span values (certificates, health checks, CIDRs).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import replace
from pathlib import PurePosixPath

from compiler.diagnostics import Diagnostic, SpecError, error, excerpt, quote
from compiler.spec.checks.consumers import (
    check_certificate_renewal,
    check_cidr_host_bits,
    check_health_check_placement,
    check_health_check_timing,
)
from compiler.spec.checks.placement import check_placements, check_reserved_namespaces, check_routing
from compiler.spec.checks.policy import check_retry_budget, check_tcp_policy
from compiler.spec.checks.ports import check_local_ports, check_workload_ports
from compiler.spec.checks.references import (
    check_cluster_refs,
    check_datacenter_refs,
    check_dependency_refs,
    check_duplicate_dependency,
    check_failover_lists,
    check_self_dependency,
)
from compiler.spec.checks.sidecar import (
    check_sidecar_overlap,
    check_sidecar_paths,
    check_sidecar_system_directories,
)
from compiler.spec.checks.waves import check_wave_coverage, check_wave_names
from compiler.spec.document import Document
from compiler.spec.load import MESH_FILE
from compiler.spec.model import Spec, mesh_from_document, service_from_document
from compiler.spec.schema import validate_document

Check = Callable[[Spec], Iterator[Diagnostic]]


SEMANTIC_CHECKS: tuple[Check, ...] = (
    check_datacenter_refs,
    check_cluster_refs,
    check_dependency_refs,
    check_self_dependency,
    check_duplicate_dependency,
    check_failover_lists,
    check_local_ports,
    check_workload_ports,
    check_placements,
    check_reserved_namespaces,
    check_routing,
    check_tcp_policy,
    check_retry_budget,
    check_health_check_timing,
    check_health_check_placement,
    check_certificate_renewal,
    check_cidr_host_bits,
    check_sidecar_paths,
    check_sidecar_overlap,
    check_sidecar_system_directories,
    check_wave_names,
    check_wave_coverage,
)


# What the other checks find in a service's file depends only on mesh.yaml, the service and the services
# it depends on. These two look at the whole mesh (every local port; every service a wave names): a
# partial build (compiler.partial) decides them from its index of the mesh instead.
MESH_WIDE_CHECKS: tuple[Check, ...] = (check_local_ports, check_wave_names)


def run_checks(spec: Spec, checks: tuple[Check, ...] = SEMANTIC_CHECKS) -> list[Diagnostic]:
    """Every diagnostic of every semantic check (of `checks`), in check order."""
    return [diagnostic for check in checks for diagnostic in check(spec)]


def check(
    documents: Mapping[str, Document],
    valid: Collection[str] = (),
    focus_of: Callable[[Spec], Collection[str]] | None = None,
) -> Spec:
    """Schema-check every document, build the model, run the semantic checks; raise SpecError with all findings.

    `valid`: names of documents that passed the per-file checks (schema, file name) with this code
    already (a build's document cache); the checks across files run on every document. `focus_of`: where the checks
    that read a service's neighbourhood run only on the services `focus_of(spec)` names, the others checked clean
    with the very same files already (a rollout's revisions, compiler.rollout.compiled); the mesh-wide checks run
    on every service, and the findings come in the same order.
    """
    spec = model(documents, valid)
    focused = spec if focus_of is None else replace(spec, focus=frozenset(focus_of(spec)))
    problems = [d for found in SEMANTIC_CHECKS for d in found(spec if found in MESH_WIDE_CHECKS else focused)]
    if problems:
        raise SpecError(problems)
    return spec


def model(documents: Mapping[str, Document], valid: Collection[str] = ()) -> Spec:
    """The per-file checks (schema, file name) of every document not in `valid`, then the model; SpecError if one
    fails. The semantic checks are not run."""
    problems: list[Diagnostic] = []
    mesh_name, mesh_doc = next(
        (name, doc) for name, doc in documents.items() if name.endswith("/" + MESH_FILE) or name == MESH_FILE
    )
    if mesh_name not in valid:
        problems += validate_document(mesh_doc, "mesh")
    service_docs = [doc for doc in documents.values() if doc is not mesh_doc]
    for name, doc in documents.items():
        if doc is not mesh_doc and name not in valid:
            problems += validate_document(doc, "service")
            problems += _name_mismatch(doc)
    if problems:
        raise SpecError(problems)
    services = {svc.name: svc for svc in map(service_from_document, service_docs)}
    return Spec(mesh=mesh_from_document(mesh_doc), services=services, documents=documents)


def _name_mismatch(doc: Document) -> Iterator[Diagnostic]:
    stem = PurePosixPath(doc.file).stem
    name = doc.data.get("service") if isinstance(doc.data, dict) else None
    if isinstance(name, str) and name != stem:
        yield error(
            doc.span(("service",)),
            "service-name-mismatch",
            f"service {quote(name)} is defined in {quote(PurePosixPath(doc.file).name)}; rename the file to "
            f"{excerpt(name)}.yaml or fix `service:`",
        )
