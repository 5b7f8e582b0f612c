"""Small helpers every layer uses: atomic file writes, log-friendly progress bars, the one
check of a parameter section's keys, and silencing C libraries that chatter on stderr."""
