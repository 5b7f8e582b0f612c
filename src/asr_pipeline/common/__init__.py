"""Small helpers every layer uses: atomic file writes and log-friendly progress bars."""
