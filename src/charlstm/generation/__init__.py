"""Generation: a `.keras` file in, text out, with NumPy alone.

In the order a request runs through them (each imports only modules above it):
`modelfile` (read the file) -> `network` (`Network`: the weights, `forward` and `step`) -> `processors`,
`sampling` -> `settings` (`GenerationSettings`, checked once) -> `state` (one request's `Generation`, the
`Batch` that steps many) -> `generate` (start / stream / generate over a network and settings) -> `scoring`,
`evaluation`, `items`, `copies` -> `model` (`CharModel`, the facade that loads a file and delegates).
Nothing here imports Keras, TensorFlow, JAX, torch or charlstm.training: a machine without them generates
(enforced by the import contracts in pyproject.toml; tests/test_generation_layout.py checks for cycles).
"""
