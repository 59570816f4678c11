"""streamd.sinks package."""
