"""ChatGLM3: gputui's own GLM model (model, engine, steps, runtime, kernels) and the transformers
mapping kept as the reference and fallback (chatglm3, chatglm3_runtime)."""
