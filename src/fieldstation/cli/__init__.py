"""fieldstation.cli."""
