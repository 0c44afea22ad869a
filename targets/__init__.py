"""Deployment targets, one module per runtime (OpenVINO, TFLite/LiteRT, ONNX Runtime, PyTorch).

Filled by the conversion-pipeline work; kept importable without torch or any converter.
"""
