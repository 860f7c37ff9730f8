"""Data and tasks: MNIST and the generated task as datasets, and the tasks a run trains on (images, Copy)."""
from coordinator.data.tasks import CopyTask, ImageTask, Task
from workers.data.datasets import (
                                       MNIST_FILES,
                                       DataError,
                                       Dataset,
                                       batches,
                                       generated_task,
                                       load_idx,
                                       load_mnist,
)

__all__ = ["MNIST_FILES", "DataError", "Dataset", "batches", "generated_task", "load_idx", "load_mnist",
           "CopyTask", "ImageTask", "Task"]
