"""Sidecar directory checks: config_dir and runtime_dir are plain absolute paths, and two separate trees.

Every directory the Puppet module declares and every volume a pod mounts is one of these two or lies inside
one of them (README "Puppet module" and "Kubernetes"): under config_dir the document directories envoy/,
nerve/ and synapse/ (read-only ConfigMaps in pods), tls/ (a Secret), discovery/<cluster>/ and the module's
receipt; under runtime_dir, eds/ and synapse/ (one emptyDir in pods). Where one setting equals the other or
lies inside it, their derived directories meet: `puppet apply` fails on every VM (config_dir = runtime_dir,
runtime_dir = config_dir/envoy, config_dir = runtime_dir/eds: Duplicate declaration: File[...]), and a pod
mounts its writable emptyDir at or inside a read-only ConfigMap or Secret. A nested pair whose names happen
not to meet today (/etc/mesh and /etc/mesh/run) is rejected as well: it works only until a meshc version
derives a directory of that name, and "two separate trees" is a rule a user can check by eye. The check
compares path segments, so /etc/mesh and /etc/mesh-run (a string prefix, two separate trees) pass.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any

from compiler.diagnostics import Diagnostic, error, quote
from compiler.spec.model import Sidecar, Spec

DIRECTORY_KEYS = ("config_dir", "runtime_dir")
DEFAULTS = Sidecar()


def check_sidecar_paths(spec: Spec) -> Iterator[Diagnostic]:
    """config_dir and runtime_dir are normalized absolute paths other than `/`: the module joins them with
    names by text (`${config_dir}/envoy`), so `/etc/mesh/`, `/etc//mesh` or `/etc/mesh/../mesh` would declare
    one directory under two titles, and `..` would put the files somewhere no reader of the spec sees."""
    for key in DIRECTORY_KEYS:
        path: str = getattr(spec.mesh.sidecar, key)
        if not _plain(path):
            yield error(
                spec.at(spec.mesh.file, "sidecar", key),
                "sidecar-path",
                f"sidecar.{key} {quote(path)} {_path_problem(spec, key, path)}",
            )


def _normalized(path: str) -> str:
    return posixpath.normpath(path).replace("//", "/")  # normpath keeps a leading `//` (POSIX leaves it open)


def _plain(path: str) -> bool:
    """Whether a sidecar directory (the schema guarantees a leading `/`) is normalized and not `/`."""
    return path != "/" and path == _normalized(path)


def _path_problem(spec: Spec, key: str, path: str) -> str:
    """What is wrong with a sidecar directory that is not _plain, and a fix that check_sidecar_overlap accepts too:
    the path it names is offered only where it is apart from the other directory (`/var/run/../../etc/mesh` names
    config_dir's /etc/mesh), and the default only where that is."""
    normal = _normalized(path)
    other_key = _other_key(key)
    other = _settled(spec, other_key)
    if normal == "/":
        what = "is the root directory," if path == "/" else "names the root directory, /,"
        return (
            f"{what} which the Puppet module would manage and pods mount over; give it a directory of its own, "
            f"{_instead(spec, key, other_key, other)}"
        )
    what = f"is not a normalized absolute path ({_NORMAL}); it names {normal}"
    if _apart(normal, other):
        return f"{what}: write that"
    return (
        f"{what}, which would overlap sidecar.{other_key} {other}{_default_note(spec, other_key)}: write a "
        f"normalized directory of its own, {_instead(spec, key, other_key, other)}"
    )


def _other_key(key: str) -> str:
    """The other sidecar directory's key."""
    return next(other for other in DIRECTORY_KEYS if other != key)


def _settled(spec: Spec, key: str) -> str:
    """Where a sidecar directory will most likely be once its own sidecar-path advice is followed, for the other's
    advice to keep apart from: the path it names, or its default where that is `/`."""
    path: str = getattr(spec.mesh.sidecar, key)
    normal = _normalized(path)
    return normal if normal != "/" else str(getattr(DEFAULTS, key))


def _apart(path: str, other: str) -> bool:
    """Whether two normalized directories other than `/` pass check_sidecar_overlap: neither inside the other."""
    return not _inside(path, other) and not _inside(other, path)


def _instead(spec: Spec, key: str, other_key: str, other: str) -> str:
    """A directory to suggest for `key`: its default, where that is apart from the other directory."""
    default: str = getattr(DEFAULTS, key)
    if _apart(default, other):
        return f"such as the default {default}"
    return f"apart from sidecar.{other_key} {other}{_default_note(spec, other_key)}"


def _default_note(spec: Spec, key: str) -> str:
    return "" if key in _written(spec) else " (the default)"


_NORMAL = "no `.` or `..` segment, `//` or trailing `/`"


def check_sidecar_overlap(spec: Spec) -> Iterator[Diagnostic]:
    """config_dir and runtime_dir are separate trees: neither equals the other or lies inside it (module docstring).

    Reported at the key that is written in mesh.yaml, or where both are, at the inner one (runtime_dir where
    they are equal): a directory put inside another is the one placed wrong, and the defaults are apart."""
    sidecar = spec.mesh.sidecar
    config, runtime = sidecar.config_dir, sidecar.runtime_dir
    if not _plain(config) or not _plain(runtime):
        return  # reported by check_sidecar_paths; where a path ends up is unclear until it is fixed
    if _inside(runtime, config):
        inner, outer = "runtime_dir", "config_dir"
    elif _inside(config, runtime):
        inner, outer = "config_dir", "runtime_dir"
    else:
        return
    written = _written(spec)
    culprit = inner if inner in written else outer
    other = outer if culprit == inner else inner
    here, there = getattr(sidecar, culprit), getattr(sidecar, other)
    relation = (
        "is the same directory as" if config == runtime else ("is inside" if culprit == inner else "contains")
    )
    default: str = getattr(DEFAULTS, culprit)
    if not _inside(default, there) and not _inside(there, default):
        fix = f"set it to a directory of its own, such as its default {default}"
    else:
        fix = (
            f"move it out of {there}"
            if culprit == inner
            else f"set it to a directory that does not hold {there}"
        )
    yield error(
        spec.at(spec.mesh.file, "sidecar", culprit),
        "sidecar-overlap",
        f"sidecar.{culprit} {quote(here)} {relation} sidecar.{other} {quote(there)}"
        f"{'' if other in written else ' (the default)'}; the Puppet module and the pods' volume mounts need "
        f"two separate directories, neither inside the other: {fix}",
    )


def _inside(path: str, directory: str) -> bool:
    """Whether `path` is `directory` or lies inside it, segment by segment (both normalized)."""
    parts, within = PurePosixPath(path).parts, PurePosixPath(directory).parts
    return parts[: len(within)] == within


def _written(spec: Spec) -> set[str]:
    """The sidecar directory keys mesh.yaml writes (the others take their defaults)."""
    sidecar: Any = spec.documents[spec.mesh.file].data.get("sidecar")
    return {key for key in DIRECTORY_KEYS if isinstance(sidecar, Mapping) and key in sidecar}


# Directories of the machine the Puppet module must never own: it declares config_dir and runtime_dir with mode
# 0755 (/tmp would lose its sticky, world-writable 1777) and purges, with force, the document directories under
# config_dir (config_dir /etc: /etc/envoy, /etc/nerve, /etc/synapse, whatever else they held). Every top-level
# directory is one; so are these well-known directories of the standard layout (FHS) and of the tools beside us.
SYSTEM_DIRECTORIES = frozenset(
    {
        *("/etc/default", "/etc/init.d", "/etc/kubernetes", "/etc/pki", "/etc/puppetlabs", "/etc/ssl"),
        *("/etc/systemd", "/opt/puppetlabs", "/run/lock", "/run/systemd", "/run/user", "/usr/bin"),
        *("/usr/include", "/usr/lib", "/usr/lib64", "/usr/libexec", "/usr/local", "/usr/sbin", "/usr/share"),
        *(
            "/usr/src",
            "/var/cache",
            "/var/lib",
            "/var/local",
            "/var/log",
            "/var/mail",
            "/var/opt",
            "/var/run",
        ),
        *("/var/spool", "/var/tmp", "/var/www"),
    }
)


def check_sidecar_system_directories(spec: Spec) -> Iterator[Diagnostic]:
    """Neither sidecar directory is a directory of the machine (SYSTEM_DIRECTORIES, or any top-level one): the
    module would take it over."""
    for key in DIRECTORY_KEYS:
        path: str = getattr(spec.mesh.sidecar, key)
        if _plain(path) and (path.count("/") == 1 or path in SYSTEM_DIRECTORIES):
            owned = "sets its mode to 0755" + (
                " and purges its envoy/, nerve/ and synapse/" if key == "config_dir" else ""
            )
            yield error(
                spec.at(spec.mesh.file, "sidecar", key),
                "sidecar-system-dir",
                f"sidecar.{key} {quote(path)} is a directory of the machine, which the Puppet module would take "
                f"over (it {owned}); give the mesh a directory of its own{_own_directory(spec.mesh.sidecar, key)}",
            )


def _own_directory(sidecar: Sidecar, key: str) -> str:
    """A directory to suggest in place of a system one: inside it, else the key's default; none where either would
    meet the other sidecar directory (advice that leads into sidecar-overlap is no advice)."""
    path, other = getattr(sidecar, key), getattr(sidecar, _other_key(key))
    for candidate in (f"{path}/mesh", getattr(DEFAULTS, key)):
        if candidate not in SYSTEM_DIRECTORIES and _apart(candidate, other):
            return f", such as {candidate}"
    return ""
