"""Foreign weight files read as plain data (no code run) and mapped onto the official checkpoint layout."""
