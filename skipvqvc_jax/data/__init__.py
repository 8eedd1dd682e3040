"""Audio and the corpus: log-mels and F0 per frame, corpus layouts, the split and statistics, preprocessing into feature folders, and reading feature files."""
