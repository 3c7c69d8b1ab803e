"""Partial builds: after an edit of a few service files, check, lower and render only their neighbourhood.

A plain build records, beside its input hashes, a few facts of every service of the spec it built
(compiler.output.facts.ServiceFacts: its file's sha256, its face, what it exposes to the invariants,
its dependencies and local port; its targets are the input-hashed ids it owns). That spec passed every
check. A rebuild whose mesh.yaml is the recorded one then works on the services an edit can affect,
with the recorded facts of all the others:

- `changed`: the services whose file is new, different or gone; `faced`: those of them whose face
  (compiler.output.reuse.face: name, ports, protocol, locality, placements; what lowering and rendering
  read of a service for other services' targets, and what other services' checks read of it) changed;
- `checked`: the changed services and the clients of the faced ones. Every semantic check but the two
  mesh-wide ones (spec.checks.MESH_WIDE_CHECKS) finds in a service's file what mesh.yaml, the service
  and its dependencies' faces make of it; every other service sees what it saw when it passed. So the
  checks run on those services only (Spec.focus), their dependencies there to be looked up; local
  ports and the services waves name are checked on the index;
- `affected`: the services whose targets' input hashes can change (a target's inputs are mesh.yaml, its
  service's file and the faces of the services it depends on and is called by, compiler.output.reuse):
  the changed services, the neighbours of the faced ones, the dependencies a changed service added or
  dropped; plus any service with a target whose files the cache cannot vouch for;
- the affected services are lowered whole, their dependencies and clients as context (compiler.ir.lower:
  their placements, identities and registrations), and only the targets whose input hash differs
  from the recorded one are rendered, their invariants checked with the context's Nerve documents and
  identities (compiler.render.invariants); every other target keeps its files. A service whose face
  did not change has its clients left alone, so what their invariants read of it must not change
  either (invariants.exposed, recorded): if it did, a rendering reads more than faces, and the whole
  build checks every client.

Whatever the partial path cannot decide exactly it does not decide: any finding (a spec error, a
meshc bug), an index that does not match, or a neighbourhood over half the mesh returns a Fallback,
and the caller runs the whole build, which reports exactly what a clean build reports.
`tests/test_incremental.py` compares both paths with clean builds after random edit sequences,
rejected edits across files and a deliberately broken renderer included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from compiler.backends.kubernetes.readers import external_readers
from compiler.diagnostics import InternalError, SpecError
from compiler.ir.lower import lower
from compiler.ir.model import Mesh
from compiler.lifetime import park
from compiler.output.cache import Cached, Swapped, write_cache
from compiler.output.disk import OnDisk
from compiler.output.documents import Line, parse_lines, read_lines, write_changed_lines
from compiler.output.facts import Recorded, ServiceFacts
from compiler.output.manifest import manifest_file
from compiler.output.reuse import (
    face,
    input_hash,
    kept_files,
    reusable,
    roles,
    spare_path,
    tree_files,
    untrusted_targets,
)
from compiler.output.spare import Listing
from compiler.output.writer import WriteResult, write_files
from compiler.partial.files import partial_artifacts, shared_files
from compiler.render import render
from compiler.render.invariants import exposed
from compiler.spec import document as spec_document
from compiler.spec.checks import MESH_WIDE_CHECKS, SEMANTIC_CHECKS, model, run_checks
from compiler.spec.document import Document, LoadError
from compiler.spec.load import MESH_FILE, SERVICES_DIR, Unreadable
from compiler.spec.model import DISCOVERY_NAMESPACE, ServiceSpec, Spec

NEIGHBOURHOOD_CHECKS = tuple(check for check in SEMANTIC_CHECKS if check not in MESH_WIDE_CHECKS)
# Past this share of the mesh in the neighbourhood, the whole build costs little more: it runs instead.
MAX_SHARE = 0.5


@dataclass(frozen=True, kw_only=True, slots=True)
class Previous:
    """The output as the last build left it: its real path and entries, its valid cache and the facts recorded."""

    real: Path
    old: Mapping[str, OnDisk]
    cached: Cached
    recorded: Recorded
    listing: Listing | None = None  # gives the spare's entries, if listed already (compiler.output.prescan)


@dataclass(frozen=True, kw_only=True, slots=True)
class Edit:
    """The spec now, against the recorded one: service -> file name, the services changed, their new documents."""

    files: Mapping[str, str]
    changed: frozenset[str]
    documents: Mapping[str, Document]


@dataclass(frozen=True, kw_only=True, slots=True)
class Graph:
    """Who depends on whom in the spec now (recorded facts for unchanged services, the new files for the others)."""

    dependencies: Mapping[str, frozenset[str]]
    clients: Mapping[str, frozenset[str]]

    def around(self, services: Iterable[str]) -> set[str]:
        """`services` with their dependencies and clients."""
        found = set(services)
        for name in list(found):
            found |= self.dependencies.get(name, frozenset()) | self.clients.get(name, frozenset())
        return found


@dataclass(frozen=True, kw_only=True, slots=True)
class Fallback:
    """The whole build must run: `documents` are the changed files' documents that passed the per-file checks."""

    documents: Mapping[str, Document]


def build_partial(
    out: Path,
    files: Mapping[str, bytes | Unreadable],
    label: str,
    hashes: Mapping[str, str],
    digest: str,
    previous: Previous,
    lines: Mapping[str, Line] | None = None,
) -> WriteResult | Fallback:
    """Build `out` from the neighbourhood of what changed since the recorded build, or say the whole build must run.

    `hashes`: sha256 of each spec file by name; `digest`: the spec's digest (compiler.output.cache.spec_digest);
    `lines`: the document cache's lines (compiler.output.documents.read_lines) if the caller read them already.
    """
    if lines is None:
        lines = read_lines(previous.real, hashes)
    edit = _edit(files, label, hashes, previous.recorded) if lines is not None else None
    if lines is None or edit is None:
        return Fallback(documents={})
    try:
        changed = _changed_specs(previous.recorded, lines, edit)
    except SpecError:
        return Fallback(documents={})
    if changed is None:
        return Fallback(documents={})
    try:
        result = _build(out, hashes, digest, previous, lines, edit, changed)
    except (SpecError, InternalError):
        result = None  # the whole build reports it, exactly as a clean build does
    return result if result is not None else Fallback(documents={d.file: d for d in edit.documents.values()})


def _edit(
    files: Mapping[str, bytes | Unreadable], label: str, hashes: Mapping[str, str], recorded: Recorded
) -> Edit | None:
    """What changed against the recorded spec; None if mesh.yaml did, if a file is not a service file as read, or if
    there is none (what the spec loader reports about the tree, the whole build reports)."""
    mesh_file = f"{label}/{MESH_FILE}"
    if recorded.mesh_file != mesh_file or hashes.get(mesh_file) != recorded.mesh_digest:
        return None
    names: dict[str, str] = {}
    documents: dict[str, Document] = {}
    for relative, raw in files.items():
        if relative == MESH_FILE:
            continue
        stem = relative.removeprefix(f"{SERVICES_DIR}/").removesuffix(".yaml")
        if not isinstance(raw, bytes) or relative != f"{SERVICES_DIR}/{stem}.yaml" or "/" in stem:
            return None
        name = f"{label}/{relative}"
        names[stem] = name
        facts = recorded.services.get(stem)
        if facts is None or facts.file != name or facts.digest != hashes[name]:
            try:
                documents[stem] = spec_document.parse_document(name, raw)
            except LoadError:
                return None
    if not names:
        return None  # no service left: the whole build reports the empty services/
    gone = set(recorded.services) - set(names)
    return Edit(files=names, changed=frozenset(documents) | gone, documents=documents)


def _build(
    out: Path,
    hashes: Mapping[str, str],
    digest: str,
    previous: Previous,
    lines: Mapping[str, Line],
    edit: Edit,
    changed: Mapping[str, ServiceSpec],
) -> WriteResult | None:
    recorded, cached = previous.recorded, previous.cached
    graph = _graph(recorded, edit, changed)
    present = set(edit.files)
    faced = _faced(recorded, edit, changed)
    # What a client's checks read of a dependency (existence, ports, protocol, locality, placements) is its face.
    checked = (edit.changed | {c for name in faced for c in graph.clients.get(name, ())}) & present
    affected = _affected(recorded, cached, edit, graph, faced) & present
    context = graph.around(affected) & present
    if len(context) > MAX_SHARE * len(present):
        return None  # the whole build costs little more
    spec = _spec(recorded, lines, edit, context)
    if spec is None or not _mesh_wide_checks_pass(recorded, edit, changed, spec):
        return None  # a mesh-wide check may fail: the whole build reports it
    if run_checks(replace(spec, focus=frozenset(checked)), NEIGHBOURHOOD_CHECKS):
        return None
    mesh = lower(spec, only=affected)
    facts = _facts(recorded, edit, hashes, spec, mesh, affected)
    if any(_exposes_anew(recorded, facts, name) for name in affected - faced):
        return (
            None  # the clients, which are not rendered, would see it differently: the whole build checks them
        )
    inputs = _inputs(recorded, cached, graph, facts, affected)
    reused = reusable(inputs, cached)
    rendered = frozenset(inputs) - reused
    if not rendered <= {target for name in affected for target in facts[name].targets}:
        return None  # cannot happen (see _affected): a target outside the neighbourhood is never rendered
    shared = shared_files(recorded, facts, cached)
    sidecars = render(mesh, only=rendered)
    artifacts = partial_artifacts(mesh, sidecars, rendered, shared)
    real = previous.real
    kept = {**kept_files(reused, cached), **shared.kept}
    stream = tree_files(artifacts, reused, cached, kept, previous=manifest_file(real))
    result = write_files(
        out,
        stream,
        (real, previous.old),
        cached.trusted,
        spare=spare_path(real),
        kept=kept,
        listing=previous.listing,
    )
    new = Recorded(mesh_file=recorded.mesh_file, mesh_digest=recorded.mesh_digest, services=facts)
    write_cache(
        real,
        digest,
        inputs,
        new,
        Swapped(
            old=previous.old,
            written=result.written,
            removed=result.removed,
            manifest=result.manifest,
            stats=result.stats,
            relinked=result.relinked,
        ),
    )
    # the recorded lines of the files left alone, new lines for the changed ones
    write_changed_lines(real, lines, spec.documents, [doc.file for doc in edit.documents.values()], hashes)
    park(locals())  # freed one by one only for a library caller (compiler.lifetime)
    return result


def _exposes_anew(recorded: Recorded, facts: Mapping[str, ServiceFacts], name: str) -> bool:
    """Whether what other workloads' invariants read of the service's workloads changed (invariants.exposed).

    Its face is the recorded one, so its clients are not rendered and their invariants not run: that holds
    only while what they read of it is unchanged (always, for a rendering that reads of it its face alone).
    """
    return name in recorded.services and facts[name].exposed != recorded.services[name].exposed


def _changed_specs(
    recorded: Recorded, lines: Mapping[str, Line], edit: Edit
) -> dict[str, ServiceSpec] | None:
    """The changed services' new ServiceSpecs, after their per-file checks (SpecError if one fails)."""
    mesh = parse_lines(lines, [recorded.mesh_file])
    if mesh is None:
        return None
    documents = {**mesh, **{doc.file: doc for doc in edit.documents.values()}}
    return dict(model(documents, valid={recorded.mesh_file}).services)


def _graph(recorded: Recorded, edit: Edit, changed: Mapping[str, ServiceSpec]) -> Graph:
    dependencies = {
        name: frozenset(d.service for d in changed[name].dependencies)
        if name in changed
        else frozenset(recorded.services[name].dependencies)
        for name in edit.files
    }
    clients: dict[str, set[str]] = {}
    for name, servers in dependencies.items():
        for server in servers:
            clients.setdefault(server, set()).add(name)
    return Graph(
        dependencies=dependencies, clients={name: frozenset(found) for name, found in clients.items()}
    )


def _faced(recorded: Recorded, edit: Edit, changed: Mapping[str, ServiceSpec]) -> set[str]:
    """The changed services whose face (what other services' targets read of them) changed: new, gone, or
    edited where others look (compiler.output.reuse.face)."""
    return {
        name
        for name in edit.changed
        if name not in changed
        or name not in recorded.services
        or recorded.services[name].face != face(changed[name])
    }


def _affected(recorded: Recorded, cached: Cached, edit: Edit, graph: Graph, faced: set[str]) -> set[str]:
    """The services whose targets' input hashes may change: see the module docstring."""
    found = set(edit.changed) | graph.around(faced)
    for name in edit.changed:
        old = recorded.services.get(name)
        before = frozenset(old.dependencies) if old is not None else frozenset()
        # a face changed: every neighbour's inputs did; a dependency added or dropped: that one's clients did
        found |= before if name in faced else before ^ graph.dependencies.get(name, frozenset())
    if len(cached.trusted) == len(cached.files) and cached.inputs.keys() >= cached.targets.keys():
        return found  # every file untouched, every target's inputs recorded: the loop below finds nothing
    untrusted = untrusted_targets(cached)
    for name, facts in recorded.services.items():  # a hand-edited or lost output file: its target is rendered
        vouched = (t in cached.inputs and t in cached.targets and t not in untrusted for t in facts.targets)
        if name not in found and not all(vouched):
            found.add(name)
    return found


def _mesh_wide_checks_pass(
    recorded: Recorded, edit: Edit, changed: Mapping[str, ServiceSpec], spec: Spec
) -> bool:
    """The mesh-wide checks (spec.checks.MESH_WIDE_CHECKS) on the index: every local port used once, every
    service a wave names still there (mesh.yaml, hence the rest of the wave check, is the recorded one)."""
    owners: dict[int, str] = {}
    for name in edit.files:
        port = changed[name].local_port if name in changed else recorded.services[name].local_port
        if owners.setdefault(port, name) != name:
            return False
    waves = spec.mesh.rollout.waves if spec.mesh.rollout is not None else ()
    return all(name in edit.files for wave in waves for name in wave.match.services or ())


def _spec(recorded: Recorded, lines: Mapping[str, Line], edit: Edit, names: Iterable[str]) -> Spec | None:
    """The spec of mesh.yaml and the services `names`: changed ones parsed anew, the others as recorded."""
    wanted = [edit.files[name] for name in names if name not in edit.documents]
    documents = parse_lines(lines, [recorded.mesh_file, *wanted])
    if documents is None:
        return None
    fresh = {doc.file: doc for name, doc in edit.documents.items() if name in names}
    # every one passed the per-file checks: the recorded ones at the last build, the fresh ones in _changed_specs
    return model({**documents, **fresh}, valid={*documents, *fresh})


def _facts(
    recorded: Recorded,
    edit: Edit,
    hashes: Mapping[str, str],
    spec: Spec,
    mesh: Mesh,
    affected: set[str],
) -> dict[str, ServiceFacts]:
    """Every service's facts now: the affected ones from their lowering, the others as recorded."""
    targets: dict[str, list[str]] = {name: [] for name in affected}
    places: dict[str, set[tuple[str, str]]] = {name: set() for name in affected}
    for workload in mesh.workloads:
        if workload.service in affected:
            targets[workload.service].append(workload.id)
            if workload.cluster is not None:
                places[workload.service].add((workload.cluster, workload.namespace))
    for reader in external_readers(mesh):  # context services have no egress, hence no readers
        targets[reader.service].append(reader.id)
        places[reader.service].add((reader.cluster, DISCOVERY_NAMESPACE))
    facts = {name: recorded.services[name] for name in edit.files if name not in affected}
    for name in affected:
        found = spec.services[name]
        facts[name] = ServiceFacts(
            file=found.file,
            digest=hashes[found.file],
            face=face(found),
            exposed=exposed(mesh.workloads_of(name)),
            dependencies=tuple(sorted({d.service for d in found.dependencies})),
            local_port=found.local_port,
            targets=tuple(sorted(targets[name])),
            places=tuple(sorted(places[name])),
        )
    return dict(sorted(facts.items()))


def _inputs(
    recorded: Recorded,
    cached: Cached,
    graph: Graph,
    facts: Mapping[str, ServiceFacts],
    affected: set[str],
) -> dict[str, str]:
    """Every target's input hash: computed for the affected services' targets, recorded for the others'.

    The recorded ones are the cache's as they are (one C-level copy of 10,600 entries, not one update per service):
    an unaffected service's targets are its recorded ones; the affected services' and the gone ones' are dropped."""
    inputs = dict(cached.inputs)
    for name in affected | (recorded.services.keys() - facts.keys()):
        before = recorded.services.get(name)
        for target in before.targets if before is not None else ():
            del inputs[target]
    for name in affected & facts.keys():
        found = facts[name]
        faces = roles(
            graph.dependencies[name],
            graph.clients.get(name, frozenset()),
            lambda other: facts[other].face if other in facts else "-",
        )
        for target in found.targets:
            inputs[target] = input_hash(recorded.mesh_file, recorded.mesh_digest, target, found.digest, faces)
    return inputs
