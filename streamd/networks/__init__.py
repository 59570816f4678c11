"""streamd.networks package."""
