"""Keys, field encryption, tokens, passwords and the permission matrix."""
