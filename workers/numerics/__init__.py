"""The maths, with no sockets and no clocks: layers, cells, synthesizers, optimizers, stages, time boxes, references."""
