"""Worker processes in three layers: numerics/ (the maths), roles/ (one event loop per role), runtime/ (process setup)."""
