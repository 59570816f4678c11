"""streamd.video package."""
