"""The networks: LLPackNet in both published variants (`llpacknet.py`, named in `variants.py`),
checkpoints and the default weights (`weights/`), and the SID U-Net used as a reference in profiles.
`variants.py` is torch-free so manifests and the CLI can name variants on a device; the rest needs torch.

May import: the top-level helpers, `toolkit.camera` and `toolkit.data`.
"""
