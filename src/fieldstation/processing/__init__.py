"""fieldstation.processing."""
