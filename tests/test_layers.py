"""The layering of ARCHITECTURE.md, held by import-linter, and a core that names no subject."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "operator_console"
# The words of the one bundled subject; the core must not know them.
SUBJECT_WORDS = re.compile(r"ratelimiter|valkey|denied|per_node", re.IGNORECASE)


def test_import_linter_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout, result.stdout


def test_the_core_names_no_subject() -> None:
    offenders = []
    for path in PACKAGE.rglob("*"):
        if not path.is_file() or path.suffix not in (".py", ".tcss"):
            continue
        parts = path.relative_to(PACKAGE).parts
        if parts[0] in ("subjects", "lab") and len(parts) > 2:
            continue  # a subject's own package (subjects/NAME/, lab/NAME/)
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if SUBJECT_WORDS.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_timeline_reference_is_current() -> None:
    from operator_console.domain.events import timeline_reference

    written = (ROOT / "docs" / "timeline.md").read_text()
    assert written == timeline_reference(), "run `python docs/timeline.py` and commit the result"


def test_the_readme_timeline_lists_exactly_the_event_classes() -> None:
    """Both ways: every name the README lists is an event class, and every class is listed."""
    from operator_console.domain.events import event_classes

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Timeline") :]
    section = section[: section.index("\n## ", 4)]
    fields = {"t", "at", "event", "ok", "summary", "ground_truth"}
    listed = set(re.findall(r"`([a-z_]+)`", section)) - fields
    names = {cls.name for cls in event_classes()}
    assert listed - names == set(), "listed but no such event class"
    assert names - listed == set(), "an event class the README's Timeline does not name"
