"""Camera input: reading RAW files and `.npy` mosaics, Bayer geometry (packing, UnPack, placement),
image sizes, and writing DNG files. numpy and rawpy only, never torch: this is the device path.

May import: the top-level helpers (`toolkit.errors`, `fileio`, `memory`, `parallel`, `progress`).
"""
