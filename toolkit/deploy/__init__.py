"""Putting the model to work: `export` builds and gates artifacts for every target (FP32 and INT8),
`artifact` reads and checks their self-describing manifests, `enhance` turns a RAW photo into an
image with PyTorch or any artifact, `tiling` keeps large photos within a memory budget, and
`warm` keeps models loaded between commands (`llpack serve`).
Running an artifact imports no torch.

May import: everything below it (helpers, camera, data, model) and the top-level `targets` and
`quantization` packages.
"""
