"""The Kubernetes objects of a workload: identity, discovery grants, sidecar documents, certificate, Service, policy.

Discovery RBAC: one ClusterRole per cluster, `meshc-discovery-reader` (read Endpoints and
EndpointSlices; it grants nothing by itself), and one RoleBinding to it per (reader, namespace
watched). A RoleBinding grants only inside its own namespace, so this is as narrow as a Role per
namespace, with half the objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from compiler.ir.model import KubernetesSource, Mesh, Workload

MANAGED_BY = "app.kubernetes.io/managed-by"
NAME_LABEL = "app.kubernetes.io/name"
MESH_LABEL = "meshc.dev/mesh"
WORKLOAD_ANNOTATION = "meshc.dev/workload"
IDENTITY_ANNOTATION = "meshc.dev/identity"
RESTART_ANNOTATION = "meshc.dev/restart-hash"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every Namespace


# Sidecar document directories, each a ConfigMap mounted at {config_dir}/<dir>. A ConfigMap key
# cannot contain '/', and Envoy's watched_directory must be the mount root so the kubelet's
# `..data` symlink swap reloads LDS/CDS, hence one ConfigMap per directory.
CONFIG_MOUNTS = ("envoy", "synapse")
DISCOVERY_CLUSTER_ROLE = "meshc-discovery-reader"
DISCOVERY_RULES = (
    {"apiGroups": [""], "resources": ["endpoints"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
)


def labels(mesh: Mesh, service: str | None) -> dict[str, str]:
    """The labels every meshc object carries; a shared Namespace has no service label."""
    found = {MANAGED_BY: "meshc"}
    if service is not None:
        found[NAME_LABEL] = service
    found[MESH_LABEL] = mesh.name
    return found


def metadata(
    mesh: Mesh,
    workload: Workload,
    name: str,
    namespace: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Name, namespace (always explicit: kube-applier applies without -n), labels, annotations."""
    return owned_metadata(mesh, workload.service, workload.id, name, namespace or workload.namespace, extra)


def owned_metadata(
    mesh: Mesh, service: str, owner: str, name: str, namespace: str, extra: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """metadata() for an owner given by id: a workload id, or an external reader id."""
    annotations = {WORKLOAD_ANNOTATION: owner, **(extra or {})}
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels(mesh, service),
        "annotations": dict(sorted(annotations.items())),
    }


def namespace_object(mesh: Mesh, namespace: str) -> dict[str, Any]:
    """A Namespace, shared by every meshc service placed in it."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": labels(mesh, None)},
    }


def service_account(mesh: Mesh, workload: Workload) -> dict[str, Any]:
    """The workload identity: spiffe://<trust domain>/ns/<namespace>/sa/<service>."""
    meta = metadata(mesh, workload, workload.service, extra={IDENTITY_ANNOTATION: workload.identity})
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}


def discovery_role_name(namespace: str, service: str) -> str:
    """`meshc-discovery.<ns>.<service>`: dots cannot occur in either name, so distinct clients never collide."""
    return f"meshc-discovery.{namespace}.{service}"


def discovery_namespaces(workload: Workload) -> list[str]:
    """Namespaces of this cluster whose Endpoints the workload's Synapse watches."""
    return sorted(
        {
            source.namespace
            for egress in workload.egress
            for source in egress.sources
            if isinstance(source, KubernetesSource) and source.cluster == workload.cluster
        }
    )


def discovery_rbac(mesh: Mesh, workload: Workload) -> list[dict[str, Any]]:
    """A RoleBinding per dependency namespace in this cluster: read Endpoints/EndpointSlices there only."""
    return discovery_grants(
        mesh, workload.service, workload.id, workload.namespace, discovery_namespaces(workload)
    )


def discovery_grants(
    mesh: Mesh, service: str, owner: str, account_namespace: str, namespaces: Sequence[str]
) -> list[dict[str, Any]]:
    """A RoleBinding in each namespace to the cluster's discovery ClusterRole, for ServiceAccount `service` of
    `account_namespace`."""
    name = discovery_role_name(account_namespace, service)
    subject = {"kind": "ServiceAccount", "name": service, "namespace": account_namespace}
    role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": DISCOVERY_CLUSTER_ROLE}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": owned_metadata(mesh, service, owner, name, namespace),
            "roleRef": dict(role),
            "subjects": [dict(subject)],
        }
        for namespace in namespaces
    ]


def discovery_cluster_role(mesh: Mesh) -> dict[str, Any]:
    """The rules every discovery RoleBinding refers to: read Endpoints and EndpointSlices (granted per namespace
    by the bindings)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": DISCOVERY_CLUSTER_ROLE, "labels": labels(mesh, None)},
        "rules": [dict(rule) for rule in DISCOVERY_RULES],
    }


def config_map_name(workload: Workload, mount: str) -> str:
    """`<service>-mesh-<dir>`, mounted at {config_dir}/<dir>."""
    return f"{workload.service}-mesh-{mount}"


def config_map(
    mesh: Mesh, workload: Workload, mount: str, texts: Mapping[str, str], restart_hash: str
) -> dict[str, Any]:
    """The sidecar documents of one directory (canonical JSON text), keyed by file name."""
    data = {
        name.split("/", 1)[1]: text for name, text in sorted(texts.items()) if name.split("/", 1)[0] == mount
    }
    meta = metadata(
        mesh, workload, config_map_name(workload, mount), extra={RESTART_ANNOTATION: restart_hash}
    )
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def tls_secret_name(workload: Workload) -> str:
    """The Secret cert-manager writes (tls.crt, tls.key, ca.crt), mounted at {config_dir}/tls."""
    return f"{workload.service}-mesh-tls"


def certificate(mesh: Mesh, workload: Workload) -> dict[str, Any]:
    """A cert-manager Certificate whose only URI SAN is the workload's SPIFFE identity (an X.509-SVID)."""
    issuer = mesh.issuer
    spec = {
        "secretName": tls_secret_name(workload),
        "secretTemplate": {"labels": labels(mesh, workload.service)},
        "issuerRef": {"group": "cert-manager.io", "kind": issuer.kind, "name": issuer.name},
        "duration": issuer.duration,
        "renewBefore": issuer.renew_before,
        "uris": [workload.identity],
        # ECDSA keys sign, they do not encipher; the same certificate serves and dials (mTLS).
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "usages": ["digital signature", "server auth", "client auth"],
    }
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": metadata(mesh, workload, tls_secret_name(workload)),
        "spec": spec,
    }


def service(mesh: Mesh, workload: Workload) -> dict[str, Any]:
    """A headless Service on mesh_port: Synapse reads its Endpoints and Envoy dials pod IPs, so no VIP is needed."""
    port = workload.ingress.mesh_port
    spec = {
        "clusterIP": "None",
        "selector": {NAME_LABEL: workload.service},
        "ports": [{"name": "mesh", "protocol": "TCP", "port": port, "targetPort": port}],
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(mesh, workload, workload.service),
        "spec": spec,
    }


def network_policy(
    mesh: Mesh, workload: Workload, clients: Sequence[tuple[str, str]], cidrs: Sequence[str]
) -> dict[str, Any]:
    """Admit mesh_port only from declared clients' pods in this cluster, (namespace, service) in the order given,
    and the off-cluster ranges."""
    peers: list[dict[str, Any]] = [
        {
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}},
            "podSelector": {"matchLabels": {NAME_LABEL: service}},
        }
        for namespace, service in clients
    ]
    peers += [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]
    port = {"protocol": "TCP", "port": workload.ingress.mesh_port}
    # A rule with no `from` admits everyone, so no peers means no rule at all: deny every source.
    rules = [{"from": peers, "ports": [port]}] if peers else []
    spec = {
        "podSelector": {"matchLabels": {NAME_LABEL: workload.service}},
        "policyTypes": ["Ingress"],
        "ingress": rules,
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(mesh, workload, f"{workload.service}-mesh"),
        "spec": spec,
    }
