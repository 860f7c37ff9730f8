"""The defaults sweep (`dni bench sweep`): a grid of single-process runs scored on a validation split."""
