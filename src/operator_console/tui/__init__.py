"""The Textual console: a view of the runtime's event bus that sends the person's commands back."""
