"""streamd.api package."""
