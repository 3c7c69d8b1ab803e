"""The hiera tree deployed on the Puppet server against output/puppet/: stale, missing, extra or hand-edited files.

A differing file is stale when an earlier meshc build wrote it, and hand-edited otherwise; the
time a data file equal to the rendering was written on the server starts the hosts' lag.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import orjson

from compiler.backends.puppet import HASHES_KEY, HIERA_ESCAPE, SIDECAR_KEY, document_hash
from compiler.diagnostics import EnvironmentFailure
from compiler.drift.model import DriftInputError
from compiler.output.compare import TreeStatus, compare_files
from compiler.output.disk import cause, read_tree
from compiler.output.manifest import MANIFEST, recorded_hashes

POOLS_DIR = "puppet/data/pools/"
NODES_DIR = "puppet/data/nodes/"


def unescape(raw: bytes) -> bytes:
    """Hiera data as hiera returns it: `%{literal('%')}{` is `%{` (JSON text holds it verbatim)."""
    return raw.replace(HIERA_ESCAPE.encode(), b"%{")


def compare_hiera(deployed: Path, tree: Mapping[str, bytes]) -> TreeStatus:
    """The tree deployed on the Puppet server (an environment: hiera.yaml, data/, modules/) against output/puppet/.

    A differing file is stale when an earlier meshc build wrote it: its hash is in a MANIFEST.json
    deployed beside it, or it is a data file whose documents still match its own document hashes.
    Anything else that differs was edited by hand.
    """
    if not deployed.is_dir():
        raise DriftInputError(
            str(deployed),
            "not a directory (the Puppet environment holding hiera.yaml and data/)",
            "hiera-tree",
        )
    try:
        actual = read_tree(deployed)
    except OSError as error:
        # The machine refused (exit 4, as for every other input meshc cannot read), naming the file or
        # directory that failed, not the root: under a large tree the root says nothing.
        where = str(error.filename) if error.filename is not None else str(deployed)
        raise EnvironmentFailure(where, f"cannot read the deployed tree: {cause(error)}") from None
    # Dot files and directories are the deployment tool's (.git, r10k's .r10k-deploy.json), not meshc's.
    actual = {
        path: data
        for path, data in actual.items()
        if not any(part.startswith(".") for part in path.split("/"))
    }
    files = {path.removeprefix("puppet/"): data for path, data in tree.items() if path.startswith("puppet/")}
    recorded = {
        path.removeprefix("puppet/"): sha for path, sha in recorded_hashes(actual.pop(MANIFEST, b"")).items()
    }
    recorded |= {
        path: _sha256(data)
        for path, data in actual.items()
        if path in files and data != files[path] and _self_consistent(data)
    }
    return compare_files(actual, files, recorded)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _self_consistent(data: bytes) -> bool:
    """A data file whose every document hashes to its own `mesh::document_hashes`: written by meshc, not by hand."""
    try:
        value = orjson.loads(unescape(data))
    except orjson.JSONDecodeError:
        return False
    if not isinstance(value, dict):
        return False
    documents, hashes = value.get(SIDECAR_KEY), value.get(HASHES_KEY)
    if not isinstance(documents, dict) or not isinstance(hashes, dict) or sorted(documents) != sorted(hashes):
        return False
    return all(document_hash(documents[name]) == hashes[name] for name in documents)


def deployed_times(deployed: Path, tree: Mapping[str, bytes]) -> dict[str, datetime]:
    """Built-tree data path -> when the deployed copy (equal to the rendering) was last written on the server."""
    times = {}
    for path in _data_paths(tree):
        local = deployed / path.removeprefix("puppet/")
        try:
            seen = os.lstat(local)
            # Only a regular file of the rendering's size is opened: a FIFO would block, a device never end.
            if (
                stat.S_ISREG(seen.st_mode)
                and seen.st_size == len(tree[path])
                and local.read_bytes() == tree[path]
            ):
                times[path] = datetime.fromtimestamp(seen.st_mtime, UTC)
        except OSError:
            continue  # missing or unreadable: compare_hiera reports it
    return times


def _data_paths(tree: Iterable[str]) -> Iterator[str]:
    return (p for p in tree if p.startswith((POOLS_DIR, NODES_DIR)) and p.endswith(".json"))
