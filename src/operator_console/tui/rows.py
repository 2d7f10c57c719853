"""Keyed DataTable rows kept in step with what the database holds."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable


def sync_rows(
    table: DataTable[Any],
    columns: tuple[str, ...],
    rows: list[tuple[str, tuple[Text, ...]]],
    *,
    order_by: str | None = None,
) -> None:
    """Keyed rows: update the ones shown, add the new ones, drop the ones gone from the database.
    Cells are Text, never str: a DataTable parses str as markup, and this data is not ours.
    With `order_by` (a column whose cells are unique), the rows end in the order given, even
    when a new row belongs between rows already shown."""
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
    if order_by is not None:
        index = columns.index(order_by)
        position = {str(values[index]): i for i, (_, values) in enumerate(rows)}
        table.sort(order_by, key=lambda cell: position.get(str(cell), len(position)))
