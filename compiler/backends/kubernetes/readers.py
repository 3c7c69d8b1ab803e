"""External readers: the identity a workload uses to read a cluster it does not run in.

A workload whose Synapse watches a cluster it does not run in (a VM pool, or a pod of another
cluster) reads that cluster's API server with a token of its own. For every such (cluster C,
client service S), C gets Namespace `meshc-discovery`, ServiceAccount `S` and its long-lived token
Secret `S-token` there, and the discovery RoleBinding in each namespace of C that S's workloads
watch from outside. These objects have the pseudo-target `k8s/<C>/meshc-discovery/<S>` (the
reader id) and its file: one grant serves every outside workload of S, so it belongs to none of
them, and a diff shows it as its own unit of rollout in cluster C. meshc never sees the token:
the token controller writes it into the Secret, and the site's secret distribution copies
`token` and `ca.crt` to `{config_dir}/discovery/<C>/` of S's VMs and pods.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from compiler.backends.kubernetes.objects import discovery_grants, owned_metadata
from compiler.ir.model import KubernetesSource, Mesh
from compiler.spec.model import DISCOVERY_NAMESPACE  # no service may be placed there (spec checks)

READERS_ANNOTATION = "meshc.dev/readers"  # on an external reader's objects: the workloads that use its token
SERVICE_ACCOUNT_NAME_ANNOTATION = "kubernetes.io/service-account.name"  # the token controller's key
SERVICE_ACCOUNT_TOKEN = "kubernetes.io/service-account-token"


@dataclass(frozen=True, kw_only=True, slots=True)
class ExternalReader:
    """Client service `service`, read by workloads outside `cluster`: the namespaces there they watch."""

    cluster: str
    service: str
    namespaces: tuple[str, ...]
    workloads: tuple[str, ...]  # the client's workloads that read through this identity

    @property
    def id(self) -> str:
        """The pseudo-target of the reader's files, `k8s/<cluster>/meshc-discovery/<service>`."""
        return f"k8s/{self.cluster}/{DISCOVERY_NAMESPACE}/{self.service}"


def external_readers(mesh: Mesh) -> tuple[ExternalReader, ...]:
    """Every (cluster, client service) whose workloads watch Kubernetes sources there from outside, sorted.

    Found once per Mesh object (`Mesh.derived`): the build, its worker and the Kubernetes backend each ask, and a
    rollout build asks for every live revision; each search walks every source of every edge (~30 ms at 1,000
    services)."""
    found: tuple[ExternalReader, ...] | None = mesh.derived.get("external_readers")
    if found is None:
        found = mesh.derived["external_readers"] = _external_readers(mesh)
    return found


def _external_readers(mesh: Mesh) -> tuple[ExternalReader, ...]:
    """The mesh's readers; in a rollout build, each also grants what other live revisions' readers watch
    (`widened_readers`)."""
    namespaces: dict[tuple[str, str], set[str]] = defaultdict(set)
    readers: dict[tuple[str, str], set[str]] = defaultdict(set)
    for workload in mesh.workloads:
        for egress in workload.egress:
            for source in egress.sources:
                if isinstance(source, KubernetesSource) and source.cluster != workload.cluster:
                    namespaces[(source.cluster, workload.service)].add(source.namespace)
                    readers[(source.cluster, workload.service)].add(workload.id)
    own = tuple(
        ExternalReader(
            cluster=cluster,
            service=service,
            namespaces=tuple(sorted(namespaces[(cluster, service)])),
            workloads=tuple(sorted(readers[(cluster, service)])),
        )
        for cluster, service in sorted(namespaces)
    )
    return widened_readers(own, mesh.rollout_readers)


def widened_readers(
    readers: tuple[ExternalReader, ...], watched: Collection[tuple[str, str, str]]
) -> tuple[ExternalReader, ...]:
    """`readers`, each also granting the namespaces `watched` (cluster, client service, namespace) names for its
    cluster and client: what other live revisions' readers watch (expand before contract). A reader only other
    revisions have is laid out by them, so none is added."""
    extra: dict[tuple[str, str], set[str]] = defaultdict(set)
    for cluster, service, namespace in watched:
        extra[(cluster, service)].add(namespace)
    return tuple(
        replace(r, namespaces=tuple(sorted({*r.namespaces, *extra[(r.cluster, r.service)]})))
        if (r.cluster, r.service) in extra
        else r
        for r in readers
    )


def reader_objects(mesh: Mesh, reader: ExternalReader) -> list[dict[str, Any]]:
    """The reader's ServiceAccount and token Secret in meshc-discovery, and its discovery grants."""
    extra = {READERS_ANNOTATION: ",".join(reader.workloads)}
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": owned_metadata(
            mesh, reader.service, reader.id, reader.service, DISCOVERY_NAMESPACE, extra
        ),
    }
    # No data: the token controller fills in token, ca.crt and namespace. Client-side apply merges
    # against the last applied object, which has no data, so a later apply keeps what it wrote.
    token = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SERVICE_ACCOUNT_TOKEN,
        "metadata": owned_metadata(
            mesh,
            reader.service,
            reader.id,
            reader_secret_name(reader.service),
            DISCOVERY_NAMESPACE,
            {**extra, SERVICE_ACCOUNT_NAME_ANNOTATION: reader.service},
        ),
    }
    return [
        account,
        token,
        *discovery_grants(mesh, reader.service, reader.id, DISCOVERY_NAMESPACE, reader.namespaces),
    ]


def reader_secret_name(service: str) -> str:
    """`<service>-token`: the Secret the token controller writes the reader's token and the cluster CA into."""
    return f"{service}-token"
