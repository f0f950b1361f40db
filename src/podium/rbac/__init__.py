"""Who may do what: users, roles, permissions, tokens, the activity log."""
