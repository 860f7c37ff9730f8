"""The training data as both sides read it: the datasets (MNIST, the generated task), batches, stage 1's shard."""
