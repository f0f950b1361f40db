"""cli component."""
