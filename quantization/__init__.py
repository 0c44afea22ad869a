"""INT8 post-training quantization and calibration data.

Filled by the conversion-pipeline work; kept importable without torch or any converter.
"""
