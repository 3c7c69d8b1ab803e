"""Semantic diff of two builds: which spec files, targets, documents and files change, and what it costs.

Results are frozen records (`records`); `compiler.report` formats them. Modules by what they do:
`values` diffs plain data, `files` one output file's two versions, `targets` two builds target by
target, `kube` lists the Kubernetes objects left behind, `revisions` reads git revisions and diffs
their builds, `output` compares an output tree on disk with what the spec renders (`meshc check`).
"""

from compiler.diff.files import OutputFile, diff_file, diff_output_file, diff_text, output_file, parse_file
from compiler.diff.kube import kube_deletions, kube_objects
from compiler.diff.output import output_drift
from compiler.diff.records import (
    ADDED,
    CHANGED,
    REMOVED,
    Change,
    DocumentDiff,
    Group,
    KubeDelete,
    MeshDiff,
    SpecFileDiff,
    TargetDiff,
    WaveSplit,
    restart_key,
)
from compiler.diff.revisions import WORKING_TREE, at_revision, diff_builds, diff_revisions, diff_specs, group
from compiler.diff.values import diff_values

__all__ = [
    "ADDED",
    "CHANGED",
    "REMOVED",
    "WORKING_TREE",
    "Change",
    "DocumentDiff",
    "Group",
    "KubeDelete",
    "MeshDiff",
    "OutputFile",
    "SpecFileDiff",
    "TargetDiff",
    "WaveSplit",
    "at_revision",
    "diff_builds",
    "diff_file",
    "diff_output_file",
    "diff_revisions",
    "diff_specs",
    "diff_text",
    "diff_values",
    "group",
    "kube_deletions",
    "kube_objects",
    "output_drift",
    "output_file",
    "parse_file",
    "restart_key",
]
