"""fieldstation.testing."""
