"""agent component."""
