"""The model: the LSTM (linen and NNX), its scan and VJP, the heads, rollout, numerics and
the Pallas kernels. Imports only `config` and `runtime`."""
