"""The narration panel: which chapter, what it says, the countdown and the keys that act now."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static


class NarrationPanel(Vertical):
    """Chapter n/N, its narration, a fault countdown, and the keys to press."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Scenario"

    def compose(self) -> ComposeResult:
        yield Static("starting the cluster...", id="chapter-title")
        yield Static("", id="chapter-text")
        yield Static("", id="countdown")
        yield Static("", id="keys-now")

    def chapter(self, f: dict[str, Any]) -> None:
        index, total = f.get("index", 0), f.get("total", 0)
        self.query_one("#chapter-title", Static).update(
            f"[b]Chapter {index}/{total}:[/] {f.get('title', '')}"
        )
        self.query_one("#chapter-text", Static).update(
            " ".join(str(f.get("narration", "")).split())
        )
        self.query_one("#countdown", Static).update("")
        last = index == total
        self.keys_hint("space: finish the run" if last else "space / →: next chapter")

    def watching(self, about: str) -> None:
        """A cluster the console did not start: no chapters, no faults."""
        self.query_one("#chapter-title", Static).update("[b]Watching[/] a running cluster")
        self.query_one("#chapter-text", Static).update(Text(about))
        self.keys_hint("no chapters, no fault injection")

    def countdown(self, f: dict[str, Any]) -> None:
        seconds = float(f.get("seconds") or 0)
        self.query_one("#countdown", Static).update(
            f"Injecting {f.get('kind')} on {f.get('target')} in {seconds:g}..."
        )
        self.add_class("-countdown")

    def fault(self, f: dict[str, Any]) -> None:
        self.query_one("#countdown", Static).update(f"FAULT: {f.get('description', f.get('kind'))}")
        self.remove_class("-countdown")
        self.add_class("-fault")

    def fault_cleared(self, f: dict[str, Any]) -> None:
        self.query_one("#countdown", Static).update(
            f"fault {f.get('kind')} on {f.get('target')} cleared by {f.get('by')}"
        )
        self.remove_class("-fault")

    def finished(self, f: dict[str, Any]) -> None:
        summary = f.get("summary") or {}
        verdict = "OK" if f.get("ok") else "FAILED"
        lines = [f"[b]Run finished: {verdict}[/] in {summary.get('duration_s', 0):.1f} s"]
        lines += [f"  - {p}" for p in summary.get("problems", [])]
        self.query_one("#countdown", Static).update("\n".join(lines))
        self.remove_class("-fault")
        self.set_class(not f.get("ok"), "-failed")
        self.query_one("#keys-now", Static).update("q: quit")

    def waiting(self, text: str) -> None:
        """What the run waits for, repeated every few seconds while it waits."""
        self.query_one("#countdown", Static).update(Text(text))

    def keys_hint(self, text: str) -> None:
        self.query_one("#keys-now", Static).update(
            f"{text} · a approve · r reject · m mode · k kill switch · t tickets · l audit · "
            "? help · q quit"
        )
