"""Write docs/timeline.md from the event classes: `python docs/timeline.py`."""

from pathlib import Path

from operator_console.domain.events import timeline_reference

OUT = Path(__file__).resolve().parent / "timeline.md"

if __name__ == "__main__":
    OUT.write_text(timeline_reference())
    print(f"wrote {OUT}")
