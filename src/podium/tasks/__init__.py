"""tasks component."""
