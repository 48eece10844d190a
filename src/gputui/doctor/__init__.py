"""Troubleshooting: checks of this machine and explanations of CUDA/cuBLAS error messages,
tied to the live GPU state. Never creates a CUDA context: what needs torch runs in a child."""
