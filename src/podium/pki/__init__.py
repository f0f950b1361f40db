"""pki component."""
