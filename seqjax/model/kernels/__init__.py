"""Hand-written accelerator kernels (Pallas) behind the XLA paths."""
