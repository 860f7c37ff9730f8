"""Worker processes in three layers: numerics/ (the maths), roles/ (a loop per role), runtime/ (process setup)."""
