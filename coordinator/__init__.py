"""The coordinator: the `dni` command, the epoch loop and its plans, the control plane, data and tasks, benchmarks."""
