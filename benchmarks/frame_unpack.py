"""Reading a raw camera frame from memory against reading a DNG of the same mosaic.

    python benchmarks/frame_unpack.py [--size 3040x4056] [--repeats 7]

For each format (12-bit CSI-2 packed, 10-bit packed, 16-bit unpacked), it packs one full-size
mosaic, then times `read_frame` on the buffer and `read_mosaic` on an uncompressed DNG of the
same mosaic, in turns in one process. It prints MB/s of the frame's buffer and the ratio against
the DNG read measured in this run, so nothing is compared with another run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pack(mosaic: np.ndarray, name: str) -> bytes:
    """A picamera2-style buffer of `mosaic` (unpadded rows), packed with numpy."""
    if name.endswith("12_CSI2P"):
        a, b = mosaic[:, 0::2], mosaic[:, 1::2]
        groups = np.stack([a >> 4, b >> 4, (a & 0xF) | ((b & 0xF) << 4)], -1)
        return groups.astype(np.uint8).tobytes()
    if name.endswith("10_CSI2P"):
        q = [mosaic[:, k::4] for k in range(4)]
        low = sum((v & 3) << (2 * k) for k, v in enumerate(q))
        return np.stack([*(v >> 2 for v in q), low], -1).astype(np.uint8).tobytes()
    return mosaic.astype("<u2").tobytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="3040x4056", help="HEIGHTxWIDTH (default: the imx477's full frame)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from toolkit.camera.dng import write_dng
    from toolkit.camera.frames import read_frame
    from toolkit.camera.raw import read_mosaic

    height, width = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for name, bits in (("SRGGB12_CSI2P", 12), ("SRGGB10_CSI2P", 10), ("SRGGB16", 16)):
            mosaic = rng.integers(0, 1 << bits, (height, width), dtype=np.uint16)
            buffer = pack(mosaic, name)
            dng = Path(folder) / f"{name}.dng"
            write_dng(dng, mosaic, "RGGB", black_level=64, white_level=(1 << bits) - 1)
            assert np.array_equal(read_frame(buffer, name, (height, width), black_level=64).data, read_mosaic(dng).data)
            frame_s, dng_s = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                read_frame(buffer, name, (height, width), black_level=64)
                frame_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                read_mosaic(dng)
                dng_s.append(time.perf_counter() - start)
            f, d = statistics.median(frame_s), statistics.median(dng_s)
            print(f"{name:14} {len(buffer) / 1e6:6.1f} MB buffer: read_frame {len(buffer) / 1e6 / f:7.0f} MB/s, "
                  f"{d / f:.2f}x faster than read_mosaic on a DNG of the same mosaic ({dng.stat().st_size / 1e6:.1f} MB file); "
                  f"same normalised mosaic: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
