"""fieldstation.runtime."""
