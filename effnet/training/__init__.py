"""Training policy: pure functions of the run's settings."""
