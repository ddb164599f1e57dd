"""Data: the tasks (generated on device, or read from the user's files), the file readers
and the host feed. Imports `model` (a task's evaluation may roll the model out)."""
