"""The dashboard's panels and dialogs."""
