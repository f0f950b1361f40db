"""jobs component."""
