"""Canary waves: the wave policy, pinned revisions, canary hosts, the per-target build and its safety checks."""
