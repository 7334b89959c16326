"""Take a model anywhere: the NumPy runtime's step as an ONNX graph (onnx.py) and as a static web page that
generates in the browser with no server (web.py), optionally with 8-bit weights (quantize.py).

Both read the weights from the loaded model (parts.py), so what they run is what `charlstm generate` runs.
"""
