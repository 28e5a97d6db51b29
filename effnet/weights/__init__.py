"""Foreign weight files read as plain data (no code run)."""
