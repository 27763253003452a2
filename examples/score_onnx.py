"""Score image pairs with an AHIQ ONNX export: onnxruntime, numpy, OpenCV and Pillow only (no torch).

    python export.py --checkpoint FILE --to onnx --output ahiq.onnx
    python examples/score_onnx.py --model ahiq.onnx --ref I01.png --dist I01_01_05.png I01_06_05.png --crops five

Each distorted image is scored against ``--ref`` as score.py scores the pair: same crops, decoding and mean."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ahiq.data.crops import PROTOCOLS, crop_positions, parse_crops  # numpy only: no torch here
from ahiq.data.images import as_unit_float, read_image  # OpenCV, PIL, numpy
from ahiq.models.config import SEED  # the standard library only
from ahiq.utils.errors import UserError, cli_main
from ahiq.utils.inputs import reading


def read_rgb(path: str | Path) -> np.ndarray:
    """``(H, W, 3)`` float32 RGB in [0, 1], as score.py reads the file (``data.images.read_image``)."""
    return as_unit_float(read_image(path))


def open_model(path: str, threads: int = 0) -> tuple[object, int]:
    """An onnxruntime CPU session of an AHIQ export (inputs ``dist``, ``ref`` ``(N, 3, S, S)``) and its crop size S."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError("examples/score_onnx.py needs onnxruntime: pip install onnxruntime") from None
    if not Path(path).is_file():
        raise UserError(f"--model {path}: not found; write it with `python export.py --to onnx`")
    reading(path)
    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads = threads
    try:
        session = onnxruntime.InferenceSession(path, settings, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own error types for files it cannot read
        if "DeformConv" in str(err):  # added to onnxruntime's CPU kernels in 1.25
            raise UserError(f"onnxruntime {onnxruntime.__version__} cannot run DeformConv: pip install "
                            "'onnxruntime>=1.25'") from None
        raise UserError(f"--model {path}: not a readable ONNX model ({type(err).__name__})") from None
    inputs = {i.name: i.shape for i in session.get_inputs()}
    shapes = [list(s)[1:] for s in inputs.values()]
    size = shapes[0][-1] if sorted(inputs) == ["dist", "ref"] and shapes[0] else None
    if isinstance(size, int) and size > 0 and shapes[0] == shapes[1] == [3, size, size]:
        return session, size
    found = ", ".join(f"{name} {shape}" for name, shape in inputs.items()) or "none"
    raise UserError(f"--model {path}: its inputs ({found}) are not an AHIQ export's (dist and ref, (N, 3, S, S)); "
                    "write one with `python export.py --to onnx`")


def crops(image: np.ndarray, positions: list[tuple[int, int]], size: int) -> np.ndarray:
    """The windows ``(top, left)`` of ``image`` ``(H, W, 3)`` as a batch ``(N, 3, size, size)``."""
    return np.stack([image[t:t + size, x:x + size].transpose(2, 0, 1) for t, x in positions])


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", metavar="FILE", required=True, help="ONNX file written by `python export.py --to onnx`")
    p.add_argument("--ref", metavar="FILE", required=True, help="reference image file")
    p.add_argument("--dist", metavar="FILE", required=True, nargs="+", help="distorted image file(s), each against --ref")
    p.add_argument("--crops", default="center", help=f"crop protocol, as score.py's: {PROTOCOLS} (default: center)")
    p.add_argument("--seed", type=int, default=SEED, help=f"seed of random:N crops (default: {SEED}, score.py's)")
    p.add_argument("--batch_size", type=int, default=4, help="distorted images, all crops, per onnxruntime run (default: 4)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (default: 0, its own choice)")
    opt = p.parse_args(argv)
    parse_crops(opt.crops)
    if opt.batch_size < 1 or opt.threads < 0:
        raise UserError("--batch_size must be >= 1 and --threads >= 0")
    return opt


@cli_main
def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    opt = parse(argv)
    session, size = open_model(opt.model, opt.threads)
    ref = read_rgb(opt.ref)
    h, w = ref.shape[:2]
    if h < size or w < size:
        raise UserError(f"--ref {opt.ref}: {w}x{h} is smaller than the {size}x{size} crop the model was exported for")
    positions = crop_positions(opt.crops, h, w, size, seed=opt.seed)
    ref_crops = crops(ref, positions, size)
    results = []
    for start in range(0, len(opt.dist), opt.batch_size):
        names = opt.dist[start:start + opt.batch_size]
        images = [read_rgb(name) for name in names]
        for name, image in zip(names, images):
            if image.shape != ref.shape:
                raise UserError(f"{name}: {image.shape[1]}x{image.shape[0]} differs from --ref {opt.ref} ({w}x{h})")
        dist = np.concatenate([crops(image, positions, size) for image in images])
        scores = session.run(None, {"dist": dist, "ref": np.tile(ref_crops, (len(images), 1, 1, 1))})[0]
        results += zip(names, scores.reshape(len(images), len(positions)).mean(axis=1).tolist())
    width = max(len(name) for name, _ in results)
    print(f"{'dist':<{width}}  {'ref':<12}  score")
    for name, score in results:
        print(f"{name:<{width}}  {Path(opt.ref).name:<12}  {score:.6f}")
    return results


if __name__ == "__main__":
    main()
