"""The programs a user runs, each its flags and one call into the wings below, and what they share (usage, the compilation cache)."""
