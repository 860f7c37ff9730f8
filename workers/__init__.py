"""Numerics and worker processes: layers, synthesizers, optimizers, and one loop per role."""
