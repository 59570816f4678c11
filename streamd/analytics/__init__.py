"""Stream analytics: a motion gate, object tracking, zones and line counts (pure, synchronous parts)."""
