"""fieldstation.health."""
