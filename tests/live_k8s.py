"""Live cluster dumps built from meshc's manifests, as an API server returns them after kube-applier applied them.

The rules, per object meshc wrote (`kubectl apply -f <file>`, client-side, then `kubectl get -A -o yaml`):
- metadata gains what the API server sets: uid, resourceVersion, generation, creationTimestamp,
  managedFields (kubectl-client-side-apply, Update; and the controllers' own entries), and the
  `kubectl.kubernetes.io/last-applied-configuration` annotation (compact JSON of the applied object);
- Namespace: label `kubernetes.io/metadata.name`, `spec.finalizers: [kubernetes]`, `status.phase: Active`;
- ServiceAccount: `secrets` (token controller, clusters before 1.24) and `imagePullSecrets` (a registry
  admission controller);
- Secret (service-account token): the token controller's `data` (ca.crt, namespace, token) and its
  `kubernetes.io/service-account.uid` annotation;
- RoleBinding: `subjects[].apiGroup: ""` (the defaulted group, which some kubectl versions print);
- Service: clusterIPs, ipFamilies, ipFamilyPolicy, internalTrafficPolicy, sessionAffinity, type,
  `status.loadBalancer: {}`;
- NetworkPolicy: an empty `ingress` list is dropped (Go `omitempty`);
- Certificate: `status` (Ready condition, notBefore, notAfter, renewalTime, revision), generation;
- the labels other controllers add (a policy engine's `team` label on every namespace) and annotations.
Besides meshc's objects, the cluster holds what every cluster holds and a dump of these kinds returns:
each namespace's `default` ServiceAccount and `kube-root-ca.crt` ConfigMap, kube-system objects, and
cert-manager's issued Secret `<svc>-mesh-tls`, which copies meshc's labels (secretTemplate) but not
the ownership annotation.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml

from compiler.backends.kubernetes.layout import OWNER_ANNOTATION
from compiler.backends.kubernetes.objects import NAME_LABEL, WORKLOAD_ANNOTATION
from compiler.drift.kubernetes import LAST_APPLIED, expected_objects

APPLIED_AT = "2026-11-20T10:00:00Z"


def live_objects(tree: Mapping[str, bytes], cluster: str) -> list[dict[str, Any]]:
    """Every object of `cluster` as the API server returns it, meshc's and the cluster's own, in kubectl's order."""
    objects = [
        live_object(expected.obj, index)
        for index, expected in enumerate(expected_objects(tree).get(cluster, []))
    ]
    namespaces = sorted(o["metadata"]["name"] for o in objects if o["kind"] == "Namespace")
    objects += list(cluster_objects(namespaces))
    objects += [issued_secret(o) for o in objects if o["kind"] == "Certificate"]
    return sorted(
        objects, key=lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
    )


def live_object(applied: Mapping[str, Any], index: int) -> dict[str, Any]:
    """One meshc object after `kubectl apply` and the API server's and controllers' changes (module docstring)."""
    obj = copy.deepcopy(dict(applied))
    meta = obj["metadata"]
    name, kind = meta["name"], obj["kind"]
    meta["annotations"] = {
        **meta.get("annotations", {}),
        LAST_APPLIED: last_applied(applied),
        "policy.example.com/validated": "true",
    }
    meta.update(
        uid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{meta.get('namespace', '')}/{name}")),
        resourceVersion=str(1000 + index),
        generation=1,
        creationTimestamp=APPLIED_AT,
        managedFields=[_managed("kubectl-client-side-apply", obj)],
    )
    if kind == "Namespace":
        meta["labels"] = {**meta["labels"], "kubernetes.io/metadata.name": name, "team": "platform"}
        obj["spec"], obj["status"] = {"finalizers": ["kubernetes"]}, {"phase": "Active"}
    elif kind == "ServiceAccount":
        obj["secrets"] = [{"name": f"{name}-token-x7k2p"}]
        obj["imagePullSecrets"] = [{"name": "registry-pull"}]
    elif kind == "Secret":
        meta["annotations"]["kubernetes.io/service-account.uid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, name))
        obj["data"] = {
            key: base64.b64encode(value.encode()).decode()
            for key, value in (
                ("ca.crt", "-----BEGIN CERTIFICATE-----\n"),
                ("namespace", meta["namespace"]),
                ("token", "eyJhbGciOiJSUzI1NiJ9.x.y"),
            )
        }
        meta["managedFields"].append(_managed("kube-controller-manager", {"data": obj["data"]}))
    elif kind == "RoleBinding":
        for subject in obj["subjects"]:
            subject.setdefault("apiGroup", "")
    elif kind == "Service":
        obj["spec"].update(
            clusterIPs=["None"],
            ipFamilies=["IPv4"],
            ipFamilyPolicy="SingleStack",
            internalTrafficPolicy="Cluster",
            sessionAffinity="None",
            type="ClusterIP",
        )
        obj["status"] = {"loadBalancer": {}}
    elif kind == "NetworkPolicy" and not obj["spec"].get("ingress"):
        obj["spec"].pop("ingress", None)
    elif kind == "Certificate":
        obj["status"] = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Ready",
                    "observedGeneration": 1,
                    "lastTransitionTime": APPLIED_AT,
                    "message": "Certificate is up to date and has not expired",
                }
            ],
            "notBefore": APPLIED_AT,
            "notAfter": "2026-12-20T10:00:00Z",
            "renewalTime": "2026-12-10T10:00:00Z",
            "revision": 1,
        }
        meta["managedFields"].append(
            _managed("cert-manager-certificates-readiness", {"status": obj["status"]})
        )
    return obj


def last_applied(applied: Mapping[str, Any]) -> str:
    """What kubectl stores in the annotation: the applied object as compact JSON with sorted keys, and a newline."""
    return json.dumps(applied, sort_keys=True, separators=(",", ":")) + "\n"


def _managed(manager: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "fieldsType": "FieldsV1",
        "manager": manager,
        "operation": "Update",
        "time": APPLIED_AT,
        "fieldsV1": {f"f:{key}": {} for key in fields if key not in ("apiVersion", "kind")},
    }


def cluster_objects(namespaces: Sequence[str]) -> Iterator[dict[str, Any]]:
    """What every namespace and cluster holds besides meshc's objects."""
    for namespace in [*namespaces, "default", "kube-system"]:
        yield {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("default", namespace)}
        yield {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                **_meta("kube-root-ca.crt", namespace),
                "annotations": {"kubernetes.io/description": "Contains a CA bundle"},
            },
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\n"},
        }
    yield {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**_meta("kube-dns", "kube-system"), "labels": {"k8s-app": "kube-dns"}},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }
    yield {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": _meta("cluster-admin", None),
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    }


def issued_secret(certificate: Mapping[str, Any]) -> dict[str, Any]:
    """cert-manager's Secret for a Certificate: meshc's labels copied by secretTemplate, no ownership annotation."""
    meta = certificate["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            **_meta(certificate["spec"]["secretName"], meta["namespace"]),
            "labels": dict(certificate["spec"]["secretTemplate"]["labels"]),
            "annotations": {
                "cert-manager.io/certificate-name": meta["name"],
                "cert-manager.io/issuer-kind": "ClusterIssuer",
                "cert-manager.io/uri-sans": certificate["spec"]["uris"][0],
            },
        },
        "data": {"ca.crt": "Y2E=", "tls.crt": "Y3J0", "tls.key": "a2V5"},
    }


def _meta(name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{name}")),
        "resourceVersion": "42",
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def as_list(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The List `kubectl get <kinds> -A -o yaml|json` prints."""
    return {"apiVersion": "v1", "items": list(objects), "kind": "List", "metadata": {"resourceVersion": ""}}


def dump_yaml(objects: Sequence[Mapping[str, Any]]) -> str:
    """`-o yaml`: block style, keys sorted as kubectl prints them."""
    # libyaml's emitter: the benchmark dumps a thousand services
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(
        as_list(objects), Dumper=dumper, sort_keys=True, default_flow_style=False, allow_unicode=True
    )


def dump_json(objects: Sequence[Mapping[str, Any]]) -> str:
    """`-o json`: four-space indent, as kubectl prints it."""
    return json.dumps(as_list(objects), indent=4, sort_keys=True) + "\n"


def find(objects: Sequence[dict[str, Any]], kind: str, namespace: str | None, name: str) -> dict[str, Any]:
    """The one object of that kind, namespace (None: cluster-scoped) and name."""
    found = [
        o
        for o in objects
        if o["kind"] == kind and o["metadata"].get("namespace") == namespace and o["metadata"]["name"] == name
    ]
    assert len(found) == 1, (kind, namespace, name, len(found))
    return found[0]


def orphan(
    mesh: str,
    cluster: str,
    kind: str,
    api_version: str,
    namespace: str | None,
    name: str,
    workload: str | None = None,
    **body: Any,
) -> dict[str, Any]:
    """An object a former rendering wrote: meshc's labels and an ownership annotation naming itself; with `workload`,
    also the workload annotation and service label meshc puts on a workload's objects."""
    meta = {
        **_meta(name, namespace),
        "labels": {"app.kubernetes.io/managed-by": "meshc", "meshc.dev/mesh": mesh},
        "annotations": {OWNER_ANNOTATION: f"{mesh}/{cluster}/{kind}/{namespace or '_'}/{name}"},
    }
    if workload is not None:
        meta["labels"][NAME_LABEL] = workload.rsplit("/", 1)[1]
        meta["annotations"][WORKLOAD_ANNOTATION] = workload
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **body}
