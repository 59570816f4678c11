"""streamd.chains package."""
