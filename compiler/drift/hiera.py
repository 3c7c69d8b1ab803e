"""The hiera tree deployed on the Puppet server against output/puppet/: stale, missing, extra or hand-edited files.

A differing file is stale when an earlier meshc build wrote it, and hand-edited otherwise; the
time a data file equal to the rendering was written on the server starts the hosts' lag.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson

from compiler.backends.puppet import HASHES_KEY, HIERA_ESCAPE, SIDECAR_KEY, document_hash
from compiler.diagnostics import EnvironmentFailure
from compiler.drift.model import DriftInputError
from compiler.emit import dump_json
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
    deployed beside it, or it is a data file in meshc's own format whose documents still match its own
    document hashes. A data file holding the very values meshc renders in other bytes was reformatted by
    hand (Puppet reads the same data). Anything else that differs was edited by hand.
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
    differing = {path: data for path, data in actual.items() if path in files and data != files[path]}
    reformatted = {path for path, data in differing.items() if _same_data(data, files[path])}
    recorded |= {
        path: _sha256(data)
        for path, data in differing.items()
        if path not in reformatted and _self_consistent(data)
    }
    status = compare_files(actual, files, recorded)
    return replace(
        status,
        hand_edited=tuple(p for p in status.hand_edited if p not in reformatted),
        reformatted=tuple(sorted(reformatted)),
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json(data: bytes) -> object:
    """A JSON file's value, or None where it is not JSON (a file of the tree that is no data file)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _same_data(deployed: bytes, rendered: bytes) -> bool:
    """Whether a deployed file that differs from meshc's bytes holds the very values meshc renders."""
    value = _json(deployed)
    return value is not None and value == _json(rendered)


def _self_consistent(data: bytes) -> bool:
    """A data file in meshc's own format (orjson, indented, keys sorted) whose every document hashes to its own
    `mesh::document_hashes`: written by an earlier meshc build, not by hand."""
    value = _json(data)
    if not isinstance(value, dict) or dump_json(value) != data:
        return False
    unescaped = unescape(data)
    if unescaped != data:  # the documents hash as meshc rendered them, before hiera's escaping
        value = _json(unescaped)
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
