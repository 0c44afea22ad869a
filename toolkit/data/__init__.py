"""Data the model learns from and is judged on: clean image sources, the synthesiser that turns them
into dark noisy RAW (unprocessing + sensor noise), training batches, the fixed evaluation sets, and
image metrics. numpy only.

May import: the top-level helpers and `toolkit.camera`.
"""
