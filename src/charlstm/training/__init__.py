"""Training: Keras `fit` over data's ids, under a chosen backend and distribution, into one `.keras` file.

Settings and recipes (`recipes`), the model builder and its compile (`model`), the `.keras` writer
(`saving`), which backend trains (`backend`, `probe`; on PyTorch, `torch_engine` and its fused-LSTM adapter
`torch_lstm`), time budgets (`budget`), devices and hosts
(`strategy`), callbacks (`callbacks`), and the run's phases (`plan`, `trainer`). Training uses data and
generation (to print samples); nothing below it imports it.
"""
