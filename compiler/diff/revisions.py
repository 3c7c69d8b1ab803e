"""Revisions and builds diffed: read two revisions of the spec from git, compile both in-process, and diff the
builds spec file by spec file and target by target, grouped by platform and datacenter and split by wave."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from compiler.diagnostics import Diagnostic, SpecError, at_revision
from compiler.diff.files import OutputFile, output_file
from compiler.diff.records import (
    ADDED,
    CHANGED,
    REMOVED,
    WORKING_TREE,
    Group,
    MeshDiff,
    SpecFileDiff,
    TargetDiff,
    WaveSplit,
    restart_key,
)
from compiler.diff.targets import Compiled, compiled, diff_files, diff_targets
from compiler.diff.transition import transition_hazards
from compiler.diff.values import diff_values
from compiler.gitsource import SpecDirMissing, SpecLocation, locate, read_revision, read_worktree
from compiler.graph.calls import diff_calls
from compiler.ir.model import Mesh
from compiler.output.manifest import MANIFEST
from compiler.pipeline import Build
from compiler.render import SidecarConfig
from compiler.render.restart import RestartClass
from compiler.spec.load import MESH_FILE, SpecFiles, spec_label
from compiler.spec.model import Spec
from compiler.targets import file_hashes, target_inputs

if TYPE_CHECKING:
    from compiler.rollout.compiled import RevisionCache

CHUNK = 3000  # targets per backend run in a diff; see _streamed_files


def diff_revisions(spec_dir: Path, base: str, head: str | None = None) -> MeshDiff:
    """Diff the spec at git revision `base` against `head` (None: the working tree, uncommitted edits included).

    Revisions are read from git objects; the working tree, index and HEAD are never touched.
    Raises RevisionError for an unknown revision, SpecError (files named `REV:path`) for an invalid head.
    """
    location = locate(spec_dir)
    label = spec_label(spec_dir)
    try:
        head_files = read_worktree(spec_dir) if head is None else read_revision(location, head)
        base_files = _read_base(location, base)
    finally:
        location.repo.close()  # stop GitPython's `git cat-file` helpers now, not at garbage collection
    cache = _new_cache()
    try:
        result = diff_specs(
            base_files, head_files, base=base, head=head or WORKING_TREE, label=label, cache=cache
        )
    except SpecError as exc:
        raise SpecError(at_revision(exc.diagnostics, head)) from None
    from compiler.diff.rollout import rollout_now  # the rollout's modules, only for a diff

    found = rollout_now(spec_dir, base, head, {t.target for t in result.targets}, cache, result.deletions)
    now = found.now if found is not None else None
    return replace(
        result,
        base_diagnostics=at_revision(result.base_diagnostics, base),
        # under a rollout, what leaves the built output at once: the spec's deletions may still be applied
        deletions=found.deletions if found is not None else result.deletions,
        # the head's rollout (not the working tree's: the head may be another revision)
        rollout=(now.mode if now is not None else "none") if result.waves else "none",
        now=now,
        # under a rollout, the merge moves the first wave alone: its step, not the spec's (its later states are the
        # rollout's own checks, an unsafe one failing the diff)
        hazards=result.hazards if found is None else found.hazards,
    )


def _new_cache() -> RevisionCache:
    from compiler.rollout.compiled import RevisionCache

    return RevisionCache()


def _read_base(location: SpecLocation, base: str) -> SpecFiles | None:
    """The spec at the base, or None when the revision exists but has no spec directory yet."""
    try:
        return read_revision(location, base)
    except SpecDirMissing:
        return None


def diff_specs(
    base_files: SpecFiles | None,
    head_files: SpecFiles,
    *,
    base: str,
    head: str,
    label: str,
    cache: RevisionCache | None = None,
) -> MeshDiff:
    """Compile both spec trees and diff them; an invalid or absent (None) base is diffed as empty, with a note.

    Only the targets whose inputs differ are rendered into files: the diff is the one `diff_builds` makes of
    both whole builds (`tests/test_diff_changed.py` compares the two on random edits).

    Both sides are compiled under the same `label`, so nothing that names the spec directory can
    differ. An invalid head raises SpecError: there is nothing to review until it is fixed. `cache`: what the
    command parsed, checked and lowered so far (compiler.rollout.compiled.RevisionCache): the two sides share
    all but a few files, and a rollout's revisions after them.
    """
    cache = cache if cache is not None else _new_cache()
    head_model = _lowered(head_files, label, cache)  # an invalid head raises before the base is looked at
    notes: list[str] = []
    diagnostics: tuple[Diagnostic, ...] = ()
    base_model = None
    if base_files is None:
        notes.append(f"there is no spec at {base}; the diff treats the base as empty, so every target is new")
    else:
        try:
            base_model = _lowered(base_files, label, cache)
        except SpecError as exc:
            diagnostics = exc.diagnostics
            notes.append(
                f"the spec at {base} is invalid ({len(diagnostics)} error(s), listed below); "
                "the diff treats the base as empty, so every target is new"
            )
    changed = _changed_targets(base_model, base_files or {}, head_model, head_files, label)
    # Both revisions rendered, their changed targets' files streamed side by side (see diff_files): no build's
    # files are ever held whole.
    old = _compiled_changed(base_model, changed) if base_model is not None else None
    new = _compiled_changed(head_model, changed)
    result = _diff_compiled(old, new, base=base, head=head, notes=tuple(notes))
    reformatted = _reformatted(base_files or {}, head_files, old, new)
    return replace(result, base_diagnostics=diagnostics, reformatted=reformatted)


def _lowered(files: SpecFiles, label: str, cache: RevisionCache | None = None) -> tuple[Spec, Mesh]:
    """A revision checked and lowered, not yet rendered, from what `cache` holds (compile_files); raise SpecError
    with every diagnostic."""
    from compiler.rollout.compiled import compile_files

    return compile_files(files, label, cache if cache is not None else _new_cache())


def _changed_targets(
    base: tuple[Spec, Mesh] | None,
    base_files: SpecFiles,
    head: tuple[Spec, Mesh],
    head_files: SpecFiles,
    label: str,
) -> frozenset[str]:
    """Targets whose input hash (compiler.incremental) differs between the revisions, or that exist in one only.

    Equal inputs render equal files and documents (`tests/test_incremental.py` fuzzes it), so every other
    target is the same on both sides and no diff needs it rendered.
    """
    head_inputs = target_inputs(*head, file_hashes(head_files, label))
    base_inputs = target_inputs(*base, file_hashes(base_files, label)) if base is not None else {}
    return frozenset(
        target
        for target in head_inputs.keys() | base_inputs.keys()
        if head_inputs.get(target) != base_inputs.get(target)
    )


def _compiled_changed(model: tuple[Spec, Mesh], changed: frozenset[str]) -> Compiled:
    """A revision rendered, with the sidecar documents of the `changed` targets only and their files (and every
    shared file) as a stream: the backends run as the diff reads it."""
    from compiler.render import render

    spec, mesh = model
    # The backends read the sidecars of the changed targets alone: only those are rendered, each checked by the
    # renderer's invariants against the whole IR as on a full rendering (compiler.render.invariants), as a partial
    # build renders (1,000 services, a one-service edit: 0.3 s of rendering per side saved).
    kept = render(mesh, only=changed)
    return Compiled(spec=spec, mesh=mesh, sidecars=kept, files=_streamed_files(mesh, kept, changed))


def _streamed_files(
    mesh: Mesh, sidecars: Mapping[str, SidecarConfig], changed: frozenset[str]
) -> Iterator[OutputFile]:
    """The files of the `changed` targets and every shared file, rendered one at a time (MANIFEST.json aside).

    The backends run CHUNK targets at a time, service by service: each run's memo (the serialized and
    escaped copies of its services' documents) dies with it, where one run over every target would hold
    them all, on both sides of the diff at once.
    """
    from compiler.backends import stream_backends

    owners = {w.id: w.service for w in mesh.workloads}
    ordered = sorted(changed, key=lambda t: (owners.get(t) or t.rsplit("/", 1)[-1], t))  # readers: by service
    for start in range(0, max(len(ordered), 1), CHUNK):
        for artifact in stream_backends(
            mesh, sidecars, frozenset(ordered[start : start + CHUNK]), values=True
        ):
            if artifact.path != MANIFEST and (start == 0 or artifact.target is not None):
                yield output_file(artifact)


def diff_builds(
    old: Build | None, new: Build, *, base: str = "base", head: str = "head", notes: tuple[str, ...] = ()
) -> MeshDiff:
    """Diff two builds (None: nothing at the base) spec file by spec file and target by target."""
    return _diff_compiled(compiled(old) if old else None, compiled(new), base=base, head=head, notes=notes)


def _diff_compiled(
    old: Compiled | None, new: Compiled, *, base: str, head: str, notes: tuple[str, ...]
) -> MeshDiff:
    files = diff_files(old.files if old else (), new.files)  # first: it reads streamed files, then frees them
    targets, shared = diff_targets(old, new, files)
    return MeshDiff(
        base=base,
        head=head,
        notes=notes,
        spec=tuple(_spec_diffs(old.spec if old else None, new.spec)),
        targets=targets,
        groups=group(targets),
        shared=shared,
        deletions=files.deletions,
        calls=diff_calls(old.mesh if old else None, new.mesh),
        waves=_wave_split(old, new, targets),
        hazards=transition_hazards(old.mesh if old else None, new.mesh),
    )


def _wave_split(old: Compiled | None, new: Compiled, targets: Sequence[TargetDiff]) -> tuple[WaveSplit, ...]:
    """Changed targets by the head's waves (the first wave always, even empty); targets no wave matches (external
    readers, which every live revision's union keeps) go with the first wave."""
    policy = new.spec.mesh.rollout
    if policy is None:
        return ()
    from compiler.spec.wave_policy import assign

    waves = assign(policy, old.mesh.workloads if old else ()) | dict(new.mesh.waves)
    first = next(w.name for w in policy.waves if not w.takes_hosts)
    split = {
        wave.name: [t.target for t in targets if waves.get(t.target, first) == wave.name]
        for wave in policy.waves
    }
    if not targets:
        return ()
    return tuple(
        WaveSplit(wave=name, targets=tuple(found)) for name, found in split.items() if found or name == first
    )


def group(targets: Sequence[TargetDiff]) -> tuple[Group, ...]:
    """Changed targets by (platform, datacenter): how many are new, removed, or need which kind of restart."""
    keyed: dict[tuple[str, str], list[TargetDiff]] = {}
    for target in targets:
        keyed.setdefault((target.platform, target.datacenter), []).append(target)
    return tuple(
        Group(
            platform=platform,
            datacenter=dc,
            targets=tuple(t.target for t in members),
            added=sum(t.status == ADDED for t in members),
            removed=sum(t.status == REMOVED for t in members),
            **{
                restart_key(cls): sum(t.status == CHANGED and t.restart == cls for t in members)
                for cls in RestartClass
            },
        )
        for (platform, dc), members in sorted(keyed.items())
    )


# ---------------------------------------------------------------- spec files


def _spec_diffs(old: Spec | None, new: Spec) -> Iterator[SpecFileDiff]:
    before, after = _spec_data(old), _spec_data(new)
    for name in sorted(set(before) | set(after), key=lambda n: (n != MESH_FILE, n)):
        service = None if name == MESH_FILE else PurePosixPath(name).stem
        if name not in after:
            yield SpecFileDiff(file=name, service=service, status=REMOVED)
        elif name not in before:
            yield SpecFileDiff(file=name, service=service, status=ADDED)
        elif before[name] != after[name]:
            yield SpecFileDiff(
                file=name, service=service, status=CHANGED, changes=diff_values(before[name], after[name])
            )


def _spec_data(spec: Spec | None) -> dict[str, Any]:
    """Document data by path relative to the spec directory (documents are keyed `label/relative`)."""
    if spec is None:
        return {}
    label = spec.mesh.file[: -len(MESH_FILE)]
    return {name[len(label) :]: doc.data for name, doc in spec.documents.items()}


def _reformatted(before: SpecFiles, after: SpecFiles, old: Compiled | None, new: Compiled) -> tuple[str, ...]:
    if old is None:
        return ()
    old_data, new_data = _spec_data(old.spec), _spec_data(new.spec)
    return tuple(
        sorted(
            name
            for name in set(before) & set(after)
            if before[name] != after[name] and name in old_data and old_data.get(name) == new_data.get(name)
        )
    )
