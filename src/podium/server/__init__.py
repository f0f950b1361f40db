"""server component."""
