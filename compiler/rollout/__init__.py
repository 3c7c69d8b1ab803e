"""Canary waves: pinned revisions, canary hosts, the per-target build and its safety checks.

The wave policy itself is part of the spec language (mesh.yaml `rollout.waves`): compiler/spec/wave_policy.py.
"""
