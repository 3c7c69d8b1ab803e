"""A live revision of a rollout rendered: the files of the targets it lays out, and for comparing two builds
(`meshc plan`, `meshc diff`) what each target's rendering gives, kept target by target in the command's cache."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping

from compiler.backends import stream_backends
from compiler.emit import Artifact
from compiler.ir.model import Mesh
from compiler.memo import Memo
from compiler.render import SidecarConfig, render
from compiler.render.restart import document_prints
from compiler.rollout.compiled import Laid, Rendered, Renderings, TargetPrint
from compiler.rollout.placement import State
from compiler.rollout.revisions import Context, spec_key


def laid_files(artifacts: Iterable[Artifact], keep: bool, values: bool = False) -> Iterator[Laid]:
    """Each artifact as a file of the tree: with its bytes if `keep` (and its value if `values`), else by digest
    alone."""
    for artifact in artifacts:
        digest = hashlib.sha256(artifact.data).hexdigest()
        yield Laid(
            path=artifact.path,
            target=artifact.target,
            digest=digest,
            data=artifact.data if keep else None,
            value=artifact.value if keep and values else None,
        )


def _canary_pools(state: State, revision: str) -> frozenset[str]:
    """The VM pools with a canary host whose wave runs `revision`: their sidecars make its node files."""
    waves = {r.wave for r in state.revisions if r.revision == revision}
    return frozenset(c.pool for c in state.canaries if c.wave in waves)


def render_revision(
    context: Context,
    revision: str,
    state: State,
    own: frozenset[str],
    keep: bool = False,
    values: bool = False,
) -> tuple[Rendered, Iterator[Laid]]:
    """One live revision's widened IR rendered, and the files of the targets in `own` (workloads that run it and
    external readers) and its shared files. What is kept of the rendering: the sidecars of its canary pools (their
    node files), and unless `keep`, the prints of its targets' documents and its files' digests, in the context's
    cache.

    `keep` (a build, which renders each revision once): the files carry their bytes (and with `values`, the data
    they serialize) and are serialized as they are taken, while this revision's documents are held."""
    mesh = state.meshes[revision]
    canaries = _canary_pools(state, revision)
    # Only the workloads this revision lays out or keeps are rendered (the readers' ids name none). The invariants
    # check each of them against the whole revision's IR, exactly as on a full rendering
    # (compiler.render.invariants); how a workload at one revision meets a peer at another is what
    # compiler.rollout.states checks. Every target is then rendered once per build, not once per live revision.
    wanted = own | canaries
    if keep:
        sidecars = render(mesh, only=wanted)
        done = Rendered(revision=revision, mesh=mesh, canaries=_kept(sidecars, canaries), prints={}, laid=())
        # Backends serialize most of a build: only this revision's own targets are worth laying out.
        return done, laid_files(stream_backends(mesh, sidecars, own, values=values), keep=True, values=values)
    found = context.cache.rendered.setdefault(rendering_key(context, revision, mesh), Renderings())
    _render_more(found, mesh, own, canaries)
    done = Rendered(
        revision=revision,
        mesh=mesh,
        canaries=_kept(found.canaries, canaries),
        prints={target: found.prints[target] for target in sorted(wanted) if target in found.prints},
        laid=(
            *(found.shared or ()),
            *(laid for target in sorted(own) for laid in found.files.get(target, ())),
        ),
    )
    return done, iter(done.laid)


def _render_more(found: Renderings, mesh: Mesh, own: frozenset[str], canaries: frozenset[str]) -> None:
    """Add to `found` what it lacks of `own` (the prints of the workloads' documents, every target's files) and of
    `canaries` (the prints and sidecars of those pools), and the shared files the first time: a target asked for
    again (the other rollout of a plan or a diff) is not rendered again."""
    workloads = {w.id for w in mesh.workloads}
    files = own - found.files.keys()
    pools = canaries - found.canaries.keys()
    renders = (files | pools | (own - found.prints.keys())) & workloads
    if not files and not pools and not renders and found.shared is not None:
        return
    sidecars = render(mesh, only=renders)
    memo = Memo()
    for target in sorted(renders - found.prints.keys()):
        found.prints[target] = TargetPrint(
            documents=document_prints(sidecars[target].documents, memo),
            restart_sensitive=sidecars[target].workload.restart_sensitive,
        )
    found.canaries.update((pool, sidecars[pool]) for pool in sorted(pools) if pool in sidecars)
    laid: dict[str, list[Laid]] = {target: [] for target in files}
    shared: list[Laid] = []
    for file in laid_files(stream_backends(mesh, sidecars, files, shared=found.shared is None), keep=False):
        if file.target in laid:
            laid[file.target].append(file)
        else:
            shared.append(file)
    found.files.update((target, tuple(those)) for target, those in laid.items())
    if found.shared is None:
        found.shared = tuple(shared)


def _kept(sidecars: Mapping[str, SidecarConfig], pools: frozenset[str]) -> dict[str, SidecarConfig]:
    return {pool: sidecars[pool] for pool in sorted(pools) if pool in sidecars}


def rendering_key(context: Context, revision: str, mesh: Mesh) -> tuple[str, str]:
    """What a live revision's renderings are made of: its spec (by content: a revision's name means another spec
    at each side of a diff) and what widening added to its IR (`mesh`)."""
    return spec_key(context, revision) or revision, _mesh_key(mesh)


def _mesh_key(mesh: Mesh) -> str:
    """What a widened IR adds to its revision: the allow-lists, the waves, the foreign identities and pods."""
    digest = hashlib.sha256()
    seen: set[str] = set()
    for workload in mesh.workloads:
        if workload.service not in seen:
            seen.add(workload.service)
            digest.update(
                repr(
                    (workload.service, workload.ingress.allowed_clients, workload.ingress.client_services)
                ).encode()
            )
    digest.update(repr(sorted(mesh.waves.items())).encode() + repr(sorted(mesh.rollout_identities)).encode())
    digest.update(repr(sorted(mesh.rollout_pods)).encode() + repr(sorted(mesh.rollout_readers)).encode())
    return digest.hexdigest()
