"""Generation: a `.keras` file in, text out, with NumPy alone.

The model-file reader (`modelfile`), the network's one-step function (`network`), the loaded model
(`model.CharModel`), one request's state and the step that advances many together (`state`), logit
processors (`processors`) and sampling (`sampling`). Nothing here imports Keras, TensorFlow, JAX, torch or
charlstm.training: a machine without them generates (enforced by the import contracts in pyproject.toml).
"""
