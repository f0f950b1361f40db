"""protocol component."""
