"""What every kind's runtime uses: the Runtime protocol, weight loading, CUDA graphs of a decode
step, sampling, and transformers helpers."""
