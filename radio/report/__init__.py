"""What a run's results look like to people: ``report.html`` and the W&B / TensorBoard dashboards. Reads the
results folder through ``radio/run/layout.py``; written to by the training loop and by ``radio eval``."""
