"""inventory component."""
