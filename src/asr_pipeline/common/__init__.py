"""Small helpers every layer uses: atomic file writes, log-friendly progress bars, and the one
check of a parameter section's keys."""
