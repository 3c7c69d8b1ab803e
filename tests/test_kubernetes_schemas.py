"""Every Kubernetes object meshc writes, and the example Deployment, against the official schemas in strict mode.

Built-in kinds validate against kubernetes-validate's bundled *strict* schemas for one pinned
Kubernetes version; custom resources against their CRD's openAPIV3Schema from ../shared/crds
(kubernetes-validate only WARNs on those and exits 0). An object with no known schema fails.
One jsonschema validator per kind is built once per session: the shipped
`kubernetes_validate.validate()` re-reads its 1.8 MB definitions file on every call.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from compiler.backends.kubernetes import build_kubernetes
from compiler.emit import Artifact
from compiler.ir.lower import lower
from compiler.render import render
from compiler.spec.checks import check
from compiler.spec.load import load_documents, spec_files

# Kubernetes 1.32: the kubectl on our build hosts is v1.32 and kube-applier refuses to run when
# kubectl and the API server differ by more than one minor, so our clusters are 1.31-1.33; native
# sidecar containers (the example Deployment) are on by default there. Every API meshc emits is GA
# and unchanged across the bundled 1.25-1.37, so pinning the middle of our fleet loses nothing.
K8S_VERSION = "1.32"
ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = ROOT.parent / "shared" / "crds"
EXAMPLE_DEPLOYMENT = ROOT / "examples" / "kubernetes" / "deployment.yaml"
sys.path.insert(0, str(ROOT))
from benchmarks.synth import generate  # noqa: E402 - the benchmark's mesh: other names, sizes and shapes

pytestmark = pytest.mark.consumer  # every test here hands objects to kubernetes-validate and CRD schemas

OBJECT_META = (
    "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)


class Schemas:
    """Strict validators by (apiVersion, kind), built lazily, one per kind."""

    def __init__(self, version: str, crd_dir: Path) -> None:
        package = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
        self.dir = package / f"v{version}.0-local-strict"
        definitions = json.loads((self.dir / "_definitions.json").read_text())
        self.registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
        self.crds = dict(crd_schemas(crd_dir))
        self.validators: dict[tuple[str, str], jsonschema.Validator | None] = {}

    def errors(self, obj: Mapping[str, Any]) -> list[str]:
        """Every schema error of one object; an object of unknown kind is an error too."""
        key = (str(obj.get("apiVersion")), str(obj.get("kind")))
        if key not in self.validators:
            self.validators[key] = self._validator(*key)
        validator = self.validators[key]
        if validator is None:
            return [
                f"no schema for apiVersion {key[0]!r} kind {key[1]!r} (neither built in to Kubernetes "
                f"{K8S_VERSION} nor a known CRD)"
            ]
        return [
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(obj)
        ]

    def _validator(self, api_version: str, kind: str) -> jsonschema.Validator | None:
        schema = self.crds.get((api_version, kind)) or self._builtin(api_version, kind)
        if schema is None:
            return None
        return jsonschema.Draft202012Validator(schema, registry=self.registry)

    def _builtin(self, api_version: str, kind: str) -> dict[str, Any] | None:
        # kubernetes-validate's file naming: rbac.authorization.k8s.io/v1 -> rbac-v1; the schema's
        # own apiVersion/kind enums reject a different group that shortens to the same prefix.
        suffix = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        path = self.dir / f"{kind.lower()}-{suffix}.json"
        return json.loads(path.read_text()) if path.is_file() else None


def crd_schemas(crd_dir: Path) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    """(apiVersion, kind) -> strict JSON Schema, for every served version of every CRD in the directory."""
    for path in sorted(crd_dir.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served", True) and "schema" in version:
                    api_version = f"{group}/{version['name']}"
                    yield (
                        (api_version, kind),
                        strict_crd_schema(version["schema"]["openAPIV3Schema"], api_version, kind),
                    )


def strict_crd_schema(openapi: Mapping[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    """A CRD's structural schema made strict like kubernetes-validate's: unknown fields are errors.

    The API server would silently prune unknown fields of a custom resource, so a typo in a field
    name would be lost without a trace; in strict mode it fails instead. metadata gets the real,
    strict ObjectMeta schema (a CRD only says `type: object`). CEL rules are not evaluated.
    """
    schema = _close_objects(copy.deepcopy(dict(openapi)))
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["properties"]["metadata"] = {"$ref": OBJECT_META}
    schema["required"] = sorted(set(schema.get("required", ())) | {"apiVersion", "kind", "metadata"})
    return schema


def _close_objects(node: Any) -> Any:
    if isinstance(node, dict):
        for value in node.values():
            _close_objects(value)
        open_ended = node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node
        if "properties" in node and not open_ended:
            node["additionalProperties"] = False
    elif isinstance(node, list):
        for item in node:
            _close_objects(item)
    return node


@pytest.fixture(scope="session")
def schemas() -> Schemas:
    """The pinned strict schemas plus the shared CRDs; CI (MESHC_REQUIRE_TOOLS=1) fails without the CRDs."""
    if not CRD_DIR.is_dir():
        message = f"CRD schemas not found at {CRD_DIR} (CI places shared/ beside the clone)"
        if os.environ.get("MESHC_REQUIRE_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    return Schemas(K8S_VERSION, CRD_DIR)


def kubernetes_artifacts(spec_dir: Path) -> list[Artifact]:
    """This backend's artifacts of a spec: only the stages it reads, so another backend cannot break these tests."""
    mesh = lower(check(load_documents(spec_files(spec_dir), spec_dir.name)))
    return build_kubernetes(mesh, render(mesh))


@pytest.fixture(scope="session")
def example_objects() -> list[tuple[str, dict[str, Any]]]:
    """(path, object) for every YAML document the example mesh gets under kubernetes/, parsed once."""
    return [
        (a.path, doc)
        for a in kubernetes_artifacts(ROOT / "mesh-spec")
        for doc in yaml.load_all(a.data, Loader=yaml.CSafeLoader)
    ]


def test_every_example_object_is_valid_in_strict_mode(
    example_objects: list[tuple[str, dict[str, Any]]], schemas: Schemas
) -> None:
    objects = example_objects
    started = time.perf_counter()
    failures = {path: errors for path, obj in objects if (errors := schemas.errors(obj))}
    elapsed = time.perf_counter() - started
    assert failures == {}
    kinds = {obj["kind"] for _, obj in objects}
    assert {
        "Namespace",
        "ServiceAccount",
        "Secret",
        "Service",
        "ConfigMap",
        "Certificate",
        "ClusterRole",
        "RoleBinding",
        "NetworkPolicy",
    } <= kinds
    assert elapsed < 5, f"validating {len(objects)} objects took {elapsed:.1f}s"


def test_every_object_of_the_benchmark_mesh_is_valid_in_strict_mode(schemas: Schemas, tmp_path: Path) -> None:
    spec_dir = generate(tmp_path / "spec", services=150, datacenters=4, clusters=8, deps=6)
    objects = [
        (a.path, doc)
        for a in kubernetes_artifacts(spec_dir)
        for doc in yaml.load_all(a.data, Loader=yaml.CSafeLoader)
    ]
    assert len(objects) > 500
    assert {path: errors for path, obj in objects if (errors := schemas.errors(obj))} == {}


def test_example_deployment_is_valid_in_strict_mode(schemas: Schemas) -> None:
    docs = [d for d in yaml.load_all(EXAMPLE_DEPLOYMENT.read_text(), Loader=yaml.CSafeLoader) if d]
    assert [d["kind"] for d in docs] == ["Deployment"]
    assert schemas.errors(docs[0]) == []


def test_unknown_kind_fails(schemas: Schemas) -> None:
    errors = schemas.errors({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert len(errors) == 1 and "no schema for apiVersion 'example.com/v1' kind 'Widget'" in errors[0]


@pytest.mark.parametrize(
    ("kind", "mutate", "expected"),
    [
        ("ConfigMap", lambda o: o["metadata"].__setitem__("bogus", 1), "'bogus' was unexpected"),
        ("Service", lambda o: o["spec"]["ports"][0].__setitem__("port", "18080"), "is not of type 'integer'"),
        (
            "Certificate",
            lambda o: o["spec"].__setitem__("uri", o["spec"].pop("uris")),
            "'uri' was unexpected",
        ),
        ("Certificate", lambda o: o["spec"].pop("issuerRef"), "'issuerRef' is a required property"),
        ("Certificate", lambda o: o["metadata"].__setitem__("label", {}), "'label' was unexpected"),
        ("Certificate", lambda o: o.__setitem__("apiVersion", "cert-manager.io/v1alpha1"), "no schema"),
        ("RoleBinding", lambda o: o.__setitem__("apiVersion", "rbac.authorization.k8s.io/v2"), "no schema"),
        ("Secret", lambda o: o.__setitem__("data", {"token": 1}), "is not of type 'string'"),
        ("Secret", lambda o: o.__setitem__("tpye", o.pop("type")), "'tpye' was unexpected"),
    ],
)
def test_strict_mode_rejects_broken_objects(
    example_objects: list[tuple[str, dict[str, Any]]], schemas: Schemas, kind: str, mutate: Any, expected: str
) -> None:
    obj = copy.deepcopy(next(o for _, o in example_objects if o["kind"] == kind))
    assert schemas.errors(obj) == []
    mutate(obj)
    assert any(expected in error for error in schemas.errors(obj)), schemas.errors(obj)


def test_cached_validators_agree_with_kubernetes_validate(
    example_objects: list[tuple[str, dict[str, Any]]], schemas: Schemas
) -> None:
    """The fast path is the shipped library's check: one object of each built-in kind, good and broken."""
    first: dict[str, dict[str, Any]] = {}
    for _, obj in example_objects:
        first.setdefault(obj["kind"], obj)
    for kind, obj in sorted(first.items()):
        if kind == "Certificate":
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # why CRDs need their own check
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            continue
        assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == K8S_VERSION
        broken = copy.deepcopy(obj)
        broken["metadata"]["bogus"] = "x"
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
        assert schemas.errors(broken)
