"""Keyed DataTable rows kept in step with what the database holds."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable


def sync_rows(
    table: DataTable[Any], columns: tuple[str, ...], rows: list[tuple[str, tuple[Text, ...]]]
) -> None:
    """Keyed rows: update the ones shown, add the new ones, drop the ones gone from the database.
    Cells are Text, never str: a DataTable parses str as markup, and this data is not ours."""
    keys = {key for key, _ in rows}
    for row_key in list(table.rows):
        if row_key.value not in keys:
            table.remove_row(row_key)
    for key, values in rows:
        if key in table.rows:
            for column, value in zip(columns, values, strict=True):
                table.update_cell(key, column, value, update_width=True)
        else:
            table.add_row(*values, key=key)
