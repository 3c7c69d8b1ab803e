"""Canary waves: pinned revisions, canary hosts, the per-target build and its safety checks.

The wave policy itself is part of the spec language (mesh.yaml `rollout.waves`): compiler/spec/wave_policy.py.
"""

from __future__ import annotations

import os
from pathlib import Path

ROLLOUT_FILE = "rollout.yaml"


def has_rollout(spec_dir: Path) -> bool:
    """Whether `spec_dir` has a rollout.yaml (any kind of entry: load_rollout judges it); without one, a build is plain.

    Here, not in the modules that read it, so that validate and build of a spec without a rollout
    load neither them nor GitPython (a quarter of their start-up).
    """
    return os.path.lexists(spec_dir / ROLLOUT_FILE)
