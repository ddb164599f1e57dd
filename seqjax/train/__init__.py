"""Training: planning a run, its programs, the driver loop, checkpoints, workdirs, outputs,
the optimizer, and loading a trained run (`inference`). The commands call `trainer`."""
