"""motorpool's world_engine plugin: interactive world models (Overworld's Waypoint) as sessions."""
