"""rollout.yaml: which git revision each wave runs. Load it, validate it against git history, move a pin.

```yaml
hold: false          # true pins the first wave too: no new merge reaches anything
pins:                # every wave but the first (the first runs the revision being built)
  west: 2a1b9083...  # full commit ids; each an ancestor of (or equal to) the wave before it
  rest: 2a1b9083...
```
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from gitdb.exc import BadName, BadObject
from ruamel.yaml import YAML

from compiler.diagnostics import Diagnostic, Span, SpecError, did_you_mean, quote, yaml_value
from compiler.gitsource import git  # GitPython, or one line (exit 4) where git does not run
from compiler.rollout import ROLLOUT_FILE as ROLLOUT_FILE  # re-exported: importers read it here
from compiler.spec.document import Document, LoadError, parse_document
from compiler.spec.load import read_side_file
from compiler.spec.wave_policy import WavePolicy

WORKING_TREE = "HEAD"  # the revision name of the unpinned first wave: the commit this output is built in
_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True, kw_only=True, slots=True)
class RolloutFile:
    """rollout.yaml as read: the hold switch and the pins by wave, with the span of each pin."""

    file: str
    hold: bool
    pins: Mapping[str, str]
    spans: Mapping[str, Span]
    span: Span


@dataclass(frozen=True, kw_only=True, slots=True)
class WaveRevision:
    """The revision one wave runs: a commit id, or WORKING_TREE for the unpinned first wave."""

    wave: str
    revision: str


def load_rollout(path: Path, label: str) -> RolloutFile | None:
    """rollout.yaml at `path` (named `label` in diagnostics), or None if there is none; SpecError if malformed."""
    raw = read_side_file(path, label)
    return None if raw is None else parse_rollout(raw, label)


def parse_rollout(raw: bytes, label: str) -> RolloutFile:
    """rollout.yaml's bytes (named `label` in diagnostics) as read; SpecError if malformed."""
    try:
        doc = parse_document(label, raw)
    except LoadError as exc:
        raise SpecError([exc.diagnostic]) from None
    problems = list(_shape_problems(doc))
    if problems:
        raise SpecError(problems)
    pins = doc.data.get("pins") or {}
    return RolloutFile(
        file=label,
        hold=bool(doc.data.get("hold", False)),
        pins=dict(pins),
        spans={wave: doc.span(("pins", wave)) for wave in pins},
        span=doc.span(()),
    )


def _shape_problems(doc: Document) -> Iterator[Diagnostic]:
    data = doc.data
    if not isinstance(data, dict):
        yield _error(doc.span(()), "rollout-file", "rollout.yaml must be a mapping with `hold` and `pins`")
        return
    for key in sorted(set(data) - {"hold", "pins"}):
        yield _error(
            doc.key_span((key,)),
            "rollout-file",
            f"unknown key {key!r}{did_you_mean(key, ('hold', 'pins'))}; rollout.yaml has `hold` and `pins`",
        )
    if "hold" in data and not isinstance(data["hold"], bool):
        yield _error(
            doc.span(("hold",)), "rollout-file", f"hold must be true or false, not {_shown(data['hold'])}"
        )
    pins = data.get("pins")
    if pins is not None and not isinstance(pins, dict):
        yield _error(doc.span(("pins",)), "rollout-file", "pins must map wave names to commit ids")
        return
    for wave, pin in (pins or {}).items():
        if not isinstance(pin, str) or not _SHA.fullmatch(pin):
            yield _error(
                doc.span(("pins", wave)),
                "rollout-pin-unknown",
                f"the pin of wave {wave!r} must be a full 40-hex commit id (git rev-parse REV), not {_shown(pin)}",
            )


def _shown(value: object) -> str:
    """A value in a message, cut short: a string quoted, anything else as YAML writes it (a 5,000-digit number
    is named, not echoed)."""
    return quote(value) if isinstance(value, str) else yaml_value(value)


def _error(span: Span, code: str, message: str) -> Diagnostic:
    return Diagnostic(span=span, code=code, message=message)


def resolve(policy: WavePolicy, rollout: RolloutFile, repo: git.Repo) -> tuple[WaveRevision, ...]:
    """Each wave's revision, checked: known waves, all but the first pinned, to commits that only move forward."""
    problems = list(_name_problems(policy, rollout))
    if problems:
        raise SpecError(problems)
    head = _head(repo)
    revisions = []
    previous = WORKING_TREE
    for wave in policy.waves:
        pin = rollout.pins.get(wave.name)
        revision = WORKING_TREE if pin is None else pin
        if pin is not None:
            problems += _pin_problems(repo, rollout, wave.name, pin, previous, head)
        revisions.append(WaveRevision(wave=wave.name, revision=revision))
        previous = revision
    if problems:
        raise SpecError(problems)
    return tuple(revisions)


def _name_problems(policy: WavePolicy, rollout: RolloutFile) -> Iterator[Diagnostic]:
    names = policy.names
    for wave, span in rollout.spans.items():
        if wave not in names:
            yield _error(
                span,
                "rollout-unknown-wave",
                f"rollout.yaml pins unknown wave {wave!r}{did_you_mean(wave, names)}; "
                f"the waves are {', '.join(names)}",
            )
    first = names[0]
    if first in rollout.pins and not rollout.hold:
        yield _error(
            rollout.spans[first],
            "rollout-file",
            f"the first wave {first!r} runs the revision being built; pin it only with `hold: true`",
        )
    for wave in names[0 if rollout.hold else 1 :]:
        if wave not in rollout.pins:
            yield _error(
                rollout.span,
                "rollout-pin-missing",
                f"wave {wave!r} has no pin; add `{wave}: <commit>` under pins (the revision it runs now)",
            )


def _head(repo: git.Repo) -> str:
    try:
        return repo.head.commit.hexsha
    except ValueError:
        return ""  # no commit yet: every pin is then unknown


def _pin_problems(
    repo: git.Repo, rollout: RolloutFile, wave: str, pin: str, previous: str, head: str
) -> Iterator[Diagnostic]:
    span = rollout.spans[wave]
    if not is_commit(repo, pin):
        yield _error(
            span,
            "rollout-pin-unknown",
            f"the pin of wave {wave!r} is not a commit of this repository; "
            "fetch the full history (CI: fetch-depth: 0) or fix the pin",
        )
        return
    newer = head if previous == WORKING_TREE else previous
    if not newer or not is_commit(repo, newer):
        return  # the wave before it is itself reported
    if pin != newer and not repo.is_ancestor(repo.commit(pin), repo.commit(newer)):
        before = "the current commit" if previous == WORKING_TREE else f"{newer[:12]}"
        yield _error(
            span,
            "rollout-pin-order",
            f"wave {wave!r} is pinned to {pin[:12]}, which is not {before} of the wave before it "
            "nor one of its ancestors; pins move forward one wave at a time "
            "(meshc promote), never past the wave before",
        )


def is_commit(repo: git.Repo, sha: str) -> bool:
    """Is `sha` a commit in `repo`?"""
    try:
        return repo.commit(sha).type == "commit"
    except (BadName, BadObject, ValueError, git.GitCommandError):
        return False


def next_wave(
    revisions: tuple[WaveRevision, ...], head: str, key: Callable[[str], object]
) -> tuple[str, str] | None:
    """(wave, revision) the next promotion moves to, or None when every wave runs the newest spec.

    A wave is behind when its spec differs (by `key`, the spec's content) from the wave before it:
    a commit that changes only rollout.yaml or output/ moves nothing. The first wave never moves by
    promotion: it runs the commit being built, or, on `hold`, stays pinned until the hold is lifted.
    """
    for index, current in enumerate(revisions):
        if index == 0:
            continue
        target = _commit_of(revisions[index - 1].revision, head)
        if key(current.revision) != key(revisions[index - 1].revision):
            return current.wave, target
    return None


def _commit_of(revision: str, head: str) -> str:
    return head if revision == WORKING_TREE else revision


def promotion_target(
    revisions: tuple[WaveRevision, ...], head: str, wave: str | None, key: Callable[[str], object]
) -> tuple[str, str] | None:
    """(wave, revision) that `meshc promote [WAVE]` moves; None if nothing is left; KeyError for an unknown wave."""
    if wave is None:
        return next_wave(revisions, head, key)
    names = [r.wave for r in revisions]
    if wave not in names:
        raise KeyError(wave)
    index = names.index(wave)
    if index == 0:
        return None
    target = _commit_of(revisions[index - 1].revision, head)
    return None if key(revisions[index].revision) == key(revisions[index - 1].revision) else (wave, target)


def with_pin(revisions: tuple[WaveRevision, ...], wave: str, revision: str) -> tuple[WaveRevision, ...]:
    """The revisions after moving `wave` to `revision`."""
    return tuple(
        WaveRevision(wave=r.wave, revision=revision if r.wave == wave else r.revision) for r in revisions
    )


def rewrite_pin(text: str, wave: str, revision: str, note: str | None = None) -> str:
    """rollout.yaml text with `pins.<wave>` set to `revision`, comments and layout kept (ruamel.yaml round trip);
    `note` (one line) becomes the pin's end-of-line comment, replacing the one it had."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    data = yaml.load(text)
    if data.get("pins") is None:
        data["pins"] = {}
    data["pins"][wave] = revision
    if note is not None:
        data["pins"].yaml_add_eol_comment("# " + " ".join(note.split()), wave)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()
