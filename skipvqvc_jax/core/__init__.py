"""What every other wing stands on: user errors, deadlines, paths that may be URLs, safe writes, locks, progress lines, worker processes."""
