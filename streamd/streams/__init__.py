"""streamd.streams package."""
