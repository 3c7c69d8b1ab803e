"""What one command computes once for all the revisions of a rollout, and the records it keeps of them: each
git blob read once, each distinct spec file parsed once, each file's per-file checks and each service's
neighbourhood checks and lowering done once for the files they read, each widened revision's renderings kept
target by target."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compiler.ir.lower import Reuse, clients_of, lower, service_slice
from compiler.ir.model import Mesh, Workload
from compiler.render import SidecarConfig
from compiler.render.restart import DocumentPrint
from compiler.spec.checks import check
from compiler.spec.document import Document, LoadError, parse_document
from compiler.spec.load import MESH_FILE, SpecFiles, Unreadable, load_documents
from compiler.spec.model import Spec
from compiler.targets import file_hashes


@dataclass(frozen=True, kw_only=True, slots=True)
class Revision:
    """One revision's checked spec and IR (before any widening)."""

    revision: str
    spec: Spec
    mesh: Mesh


@dataclass(frozen=True, kw_only=True, slots=True)
class Laid:
    """A file of the rollout tree: its path, its target (None: a shared file) and the sha256 of its bytes, and the
    bytes where they are kept (a build writes them; comparing two builds needs the digests alone)."""

    path: str
    target: str | None
    digest: str
    data: bytes | None
    # the data the bytes serialize, where asked for: drift compares objects, not a parse of them
    value: Any = None
    # written beside the build by its worker (compiler.output.worker), or kept from the previous tree (a rebuild's
    # reused target): MANIFEST.json lists it, this stream writes nothing of it
    beside: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class TargetPrint:
    """A target's sidecar documents known by their prints (what comparing two renderings needs of them)."""

    documents: Mapping[str, DocumentPrint]
    restart_sensitive: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Rendered:
    """What a rollout build keeps of one live revision rendered with the widened allow-lists."""

    revision: str
    mesh: Mesh
    # the sidecars of the VM pools whose canary hosts run it: their node files
    canaries: Mapping[str, SidecarConfig]
    # Comparing builds only (empty in a build that writes): the prints of the documents of its targets and canary
    # pools, and the digests of the files it laid out.
    prints: Mapping[str, TargetPrint]
    laid: tuple[Laid, ...]


@dataclass(kw_only=True, slots=True)
class Renderings:
    """What comparing builds keeps of one widened revision's renderings, target by target, as they are asked for:
    `meshc plan` and `meshc diff` build two rollouts whose revisions lay out mostly the same targets."""

    prints: dict[str, TargetPrint] = field(default_factory=dict)  # workload -> the prints of its documents
    files: dict[str, tuple[Laid, ...]] = field(default_factory=dict)  # target laid out -> its files
    # VM pool with a canary host -> its sidecars
    canaries: dict[str, SidecarConfig] = field(default_factory=dict)
    shared: tuple[Laid, ...] | None = None  # the files of no target, once laid out


@dataclass(kw_only=True, slots=True)
class RevisionCache:
    """Compiled revisions by spec tree hash: a revision pinned by several waves, or unchanged between
    pins, is loaded, checked and lowered once per process (one cache per command, no global state)."""

    compiled: dict[str, Revision] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # commit id -> spec key
    # (file, content hash) -> parsed document
    parsed: dict[tuple[str, str], Document] = field(default_factory=dict)
    # git blob id -> bytes (compiler.gitsource.read_revision)
    blobs: dict[str, bytes] = field(default_factory=dict)
    # a service's lowered workloads, by the files they are lowered from (compiler.ir.lower.Reuse)
    lowered: dict[tuple[Any, ...], tuple[Workload, ...]] = field(default_factory=dict)
    # what passed the checks (`check_documents`): each file's document that passed the per-file ones, by name; each
    # service's neighbourhood, by its files (compiler.ir.lower.service_slice)
    valid: dict[str, Document] = field(default_factory=dict)
    clean: set[tuple[Any, ...]] = field(default_factory=set)
    # (spec key, mesh key) -> what renderings.render_revision kept of its targets so far: by content, so one cache
    # may serve the two sides of a diff, where WORKING_TREE names another spec at each
    rendered: dict[tuple[str, str], Renderings] = field(default_factory=dict)


def compile_files(files: SpecFiles, label: str, cache: RevisionCache) -> tuple[Spec, Mesh]:
    """The spec of `files` checked and lowered, as `check(load_documents(files, label))` and `lower` give them, from
    what this command parsed, checked and lowered already (`load_parsed`, `check_documents`, compiler.ir.lower.Reuse):
    raise SpecError with every finding."""
    digests = file_hashes(files, label)
    spec = check_documents(load_parsed(files, label, digests, cache.parsed), digests, cache)
    return spec, lower(spec, reuse=Reuse(digests=digests, workloads=cache.lowered))


def check_documents(
    documents: Mapping[str, Document], digests: Mapping[str, str], cache: RevisionCache
) -> Spec:
    """`check(documents)`, leaving out what this command checked clean already with the same files: the per-file
    checks of the very same parsed documents (`load_parsed` gives one object per distinct file), and the checks of a
    service's neighbourhood where every file of it is one checked clean (compiler.ir.lower.service_slice). A
    rollout's revisions share all but a few files: at 1,000 services a pinned revision is checked in ~0.03 s, not
    0.12 s. The findings are the ones `check` gives (compiler.spec.checks.check)."""
    slices: dict[str, tuple[Any, ...] | None] = {}

    def focus_of(spec: Spec) -> list[str]:
        clients = clients_of(spec)
        slices.update(
            (name, service_slice(spec, found, clients, digests)) for name, found in spec.services.items()
        )
        return [name for name, key in slices.items() if key is None or key not in cache.clean]

    valid = [name for name, document in documents.items() if cache.valid.get(name) is document]
    spec = check(documents, valid, focus_of)
    cache.valid.update(documents)
    cache.clean.update(key for key in slices.values() if key is not None)
    return spec


def load_parsed(
    files: SpecFiles, label: str, digests: Mapping[str, str], parsed: dict[tuple[str, str], Document]
) -> dict[str, Document]:
    """load_documents, parsing each distinct file once per command: revisions of a rollout share most of their files.
    `digests`: each readable file's hash by its name (compiler.targets.file_hashes), which keys `parsed`.

    Anything load_documents would report (a parse error, a stray file, no mesh.yaml) is left to it, so the
    diagnostics are exactly the same.
    """
    documents: dict[str, Document] = {}
    for relative, raw in sorted(files.items()):
        if isinstance(raw, Unreadable):
            return load_documents(files, label)
        name = f"{label}/{relative}"
        key = (name, digests[name])
        if key not in parsed:
            if relative != MESH_FILE and not relative.endswith(".yaml"):
                return load_documents(files, label)
            try:
                parsed[key] = parse_document(name, raw)
            except LoadError:
                return load_documents(files, label)
        documents[name] = parsed[key]
    if MESH_FILE not in files:
        return load_documents(files, label)
    return documents
