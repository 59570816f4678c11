"""streamd.store package."""
