"""Read dlib's serialised DNN files (`.dat`) layer by layer, in pure Python + numpy.

dlib writes a network as nested objects: `add_loss_layer` (version, loss details, subnet),
then each `add_layer` as (version, subnet, layer details, three bools, three tensors), the
innermost `add_layer` on the input layer as (version, input details, layer details, flags,
tensors). Tag and skip layers write only a version and their subnet, so the stream carries
no name for them: the reader is given the network's layout (`Layout`: the layer names from
input to output, with `tagN` / `skipN` where dlib's template has them) and checks every named
layer against it. Primitive encodings (dlib/serialize.h):

- integers: one control byte (low nibble = byte count, bit 0x80 = negative), then the bytes
  little-endian;
- floats/doubles: a `float_details` pair (int64 mantissa, int16 exponent), value m * 2**e;
- strings: length (integer) then the bytes; bools: the character '0' or '1';
- tensors: version 2, (num_samples, k, nr, nc), then little-endian float32 data;
- alias tensors (views into a layer's params): version 1 and the four sizes, no data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.errors import ModelError

FLOAT_INF, FLOAT_NINF, FLOAT_NAN = 32000, 32001, 32002


class Stream:
    """A cursor over the file's bytes with dlib's primitive decoders."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.pos = 0
        self.source = source

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.source}: {what} (at byte {self.pos})")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"file ends while reading {n} bytes")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        ctrl = self.take(1)[0]
        size = ctrl & 0x0F
        if size == 0 or size > 8:
            raise self.fail(f"bad integer control byte 0x{ctrl:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if ctrl & 0x80 else value

    def float(self) -> float:
        if self.data[self.pos] & 0x70:
            raise self.fail("old ASCII float encoding is not supported")
        mantissa, exponent = self.int(), self.int()
        if exponent == FLOAT_INF:
            return math.inf
        if exponent == FLOAT_NINF:
            return -math.inf
        if exponent == FLOAT_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def string(self) -> str:
        return self.take(self.int()).decode("latin-1")

    def bool(self) -> bool:
        ch = self.take(1)
        if ch not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {ch!r}")
        return ch == b"1"

    def peek_string(self) -> str | None:
        """The string at the cursor if one plausibly starts here (cursor unchanged)."""
        start = self.pos
        try:
            n = self.int()
            if not 0 < n < 64:
                return None
            raw = self.take(n)
        except ModelError:
            return None
        finally:
            self.pos = start
        return raw.decode("latin-1") if raw.isascii() and raw.decode().isprintable() else None

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise self.fail(f"tensor version {version}, expected 2")
        shape = tuple(self.int() for _ in range(4))
        n = int(np.prod(shape))
        return np.frombuffer(self.take(4 * n), dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise self.fail(f"alias_tensor version {version}, expected 1")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


@dataclass
class Layer:
    """One named layer: dlib's details name, its hyper-parameters and its weight arrays."""

    kind: str  # input, con, affine, relu, max_pool, avg_pool, add_prev, fc, tag, skip, loss_*
    version: str = ""
    attrs: dict[str, object] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    tag: int = 0  # for tagN / skipN / add_prevN


@dataclass(frozen=True)
class Layout:
    """A network's layer names from input to output, as its dlib template spells them."""

    name: str
    layers: tuple[str, ...]


def _split_params(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    flat = params.reshape(-1)
    out, offset = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(flat[offset : offset + n].reshape(shape))
        offset += n
    if offset > flat.size:
        raise ModelError(f"layer params hold {flat.size} values, the views need {offset}")
    return out


def _read_con(s: Stream, version: str) -> Layer:
    if version not in ("con_4", "con_5", "con_6"):
        raise s.fail(f"unsupported convolution version {version!r}")
    params = s.tensor()
    filters_n = s.int()
    nr, nc, sy, sx, py, px = (s.int() for _ in range(6))
    f_shape, b_shape = s.alias(), s.alias()
    lr, wd, blr, bwd = s.float(), s.float(), s.float(), s.float()
    use_bias = s.bool() if version in ("con_5", "con_6") else True
    use_relu = s.bool() if version == "con_6" else False
    w, b = _split_params(params, f_shape, b_shape)
    attrs = {"filters": filters_n, "kernel": (nr, nc), "stride": (sy, sx), "padding": (py, px),
             "use_bias": use_bias, "use_relu": use_relu, "multipliers": (lr, wd, blr, bwd)}
    weights = {"w": w.copy()}
    if use_bias:
        weights["b"] = b.reshape(-1).copy()
    return Layer("con", version, attrs, weights)


def _read_bn_as_affine(s: Stream, version: str) -> Layer:
    """A batch-norm layer loaded into an affine one, folded as dlib's affine_(bn_) does."""
    params = s.tensor()
    g_shape, b_shape = s.alias(), s.alias()
    s.tensor()  # means (batch statistics of the last training step)
    s.tensor()  # invstds
    running_means, running_vars = s.tensor(), s.tensor()
    s.int()  # num_updates
    s.int()  # running_stats_window_size
    for _ in range(4):
        s.float()  # learning-rate and weight-decay multipliers
    eps = np.float32(s.float())
    sg, sb = _split_params(params, g_shape, b_shape)
    gamma = (sg / np.sqrt(running_vars.reshape(sg.shape) + eps)).astype(np.float32)
    beta = (sb - gamma * running_means.reshape(sb.shape)).astype(np.float32)
    return Layer("affine", version, {"mode": "conv" if version == "bn_con2" else "fc",
                                     "disabled": False, "eps": float(eps)},
                 {"gamma": gamma, "beta": beta})


def _read_affine(s: Stream, version: str) -> Layer:
    if version in ("bn_con2", "bn_fc2"):
        return _read_bn_as_affine(s, version)
    if version not in ("affine_", "affine_2"):
        raise s.fail(f"unsupported affine version {version!r} (batch-norm layers are not read)")
    params = s.tensor()
    g_shape, b_shape = s.alias(), s.alias()
    mode = s.int()
    disabled = s.bool() if version == "affine_2" else False
    gamma, beta = _split_params(params, g_shape, b_shape)
    return Layer("affine", version, {"mode": "conv" if mode == 0 else "fc", "disabled": disabled},
                 {"gamma": gamma.copy(), "beta": beta.copy()})


def _read_pool(s: Stream, version: str, kind: str) -> Layer:
    if version != f"{kind}_2":
        raise s.fail(f"unsupported {kind} version {version!r}")
    nr, nc, sy, sx, py, px = (s.int() for _ in range(6))
    return Layer(kind, version, {"kernel": (nr, nc), "stride": (sy, sx), "padding": (py, px)})


def _read_fc(s: Stream, version: str) -> Layer:
    if version not in ("fc_2", "fc_3"):
        raise s.fail(f"unsupported fc version {version!r}")
    outputs, inputs = s.int(), s.int()
    params = s.tensor()
    w_shape, b_shape = s.alias(), s.alias()
    bias_mode = s.int()
    mults = tuple(s.float() for _ in range(4))
    use_bias = s.bool() if version == "fc_3" else True
    has_bias = bias_mode == 0 and use_bias
    w, b = _split_params(params, w_shape, b_shape if bias_mode == 0 else (0,))
    weights = {"w": w.reshape(inputs, outputs).copy()}
    if has_bias:
        weights["b"] = b.reshape(-1).copy()
    return Layer("fc", version, {"outputs": outputs, "inputs": inputs, "multipliers": mults}, weights)


def _read_details(s: Stream) -> Layer:
    version = s.string()
    if version.startswith("con_"):
        return _read_con(s, version)
    if version.startswith(("affine_", "bn_")):
        return _read_affine(s, version)
    if version.startswith("max_pool_"):
        return _read_pool(s, version, "max_pool")
    if version.startswith("avg_pool_"):
        return _read_pool(s, version, "avg_pool")
    if version.startswith("fc_"):
        return _read_fc(s, version)
    if version == "relu_":
        return Layer("relu", version)
    if version == "relu_2":
        return Layer("relu", version, {"disabled": s.bool()})
    if version == "add_prev_":
        return Layer("add_prev", version)
    raise s.fail(f"unsupported layer {version!r}")


def _read_input(s: Stream) -> Layer:
    version = s.string()
    if version == "input_rgb_image_sized":
        mean = (s.float(), s.float(), s.float())
        size = (s.int(), s.int())
        return Layer("input", version, {"mean_rgb": mean, "size": size})
    if version in ("input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
        mean = (s.float(), s.float(), s.float())
        pad = (s.int(), s.int()) if version.endswith("2") else (10, 11)
        return Layer("input", version, {"mean_rgb": mean, "pyramid_padding": pad[0],
                                        "pyramid_outer_padding": pad[1]})
    raise s.fail(f"unsupported input layer {version!r}")


def _read_loss(s: Stream) -> Layer:
    version = s.string()
    if version == "loss_metric_":
        return Layer("loss_metric", version, {"margin": 0.1, "dist_thresh": 0.75})
    if version == "loss_metric_2":
        return Layer("loss_metric", version, {"margin": s.float(), "dist_thresh": s.float()})
    if version == "loss_mmod_":
        return Layer("loss_mmod", version, _read_mmod_options(s))
    raise s.fail(f"unsupported loss layer {version!r}")


def _read_mmod_options(s: Stream) -> dict[str, object]:
    version = s.int()
    if not 1 <= version <= 4:
        raise s.fail(f"mmod_options version {version}")
    windows: list[tuple[int, int, str]] = []
    if version == 1:
        windows.append((s.int(), s.int(), ""))
    else:
        for _ in range(s.int()):
            wv = s.int()
            w, h = s.int(), s.int()
            windows.append((w, h, s.string() if wv == 2 else ""))
    opts: dict[str, object] = {"detector_windows": windows}
    opts["loss_per_false_alarm"] = s.float()
    opts["loss_per_missed_target"] = s.float()
    opts["truth_match_iou_threshold"] = s.float()
    opts["overlaps_nms"] = (s.float(), s.float())  # (iou_thresh, percent_covered_thresh)
    opts["overlaps_ignore"] = (s.float(), s.float())
    opts["assume_image_pyramid"] = bool(s.int()) if version >= 3 else True
    if version >= 4:
        opts["use_bounding_box_regression"] = s.bool()
        opts["bbr_lambda"] = s.float()
    return opts


def _skip_layer_state(s: Stream) -> None:
    """The flags and cached tensors dlib stores after a layer's details (not needed to run)."""
    for _ in range(3):
        s.bool()
    for _ in range(3):
        s.tensor()


def read_network(path: str | Path, layout: Layout) -> list[Layer]:
    """The network's layers from input to output (loss last), checked against `layout`."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"dlib model file not found: {p}")
    s = Stream(p.read_bytes(), str(p))
    if s.int() != 1:
        raise s.fail("not a dlib network (add_loss_layer version 1 expected)")
    loss = _read_loss(s)
    # Each nesting level writes its version before its subnet: read them until the input.
    versions: list[int] = []
    while s.peek_string() is None:
        versions.append(s.int())
        if len(versions) > 10_000:
            raise s.fail("no input layer found")
    expected = layout.layers
    if len(versions) != len(expected) - 1:
        raise ModelError(f"{p}: {len(versions)} layers in the file, the {layout.name} layout "
                         f"has {len(expected) - 1}; is this the right model file?")
    layers = [_read_input(s)]
    innermost = True
    for version, name in zip(reversed(versions), expected[1:], strict=True):
        if name.startswith(("tag", "skip")):
            if version != 1:
                raise s.fail(f"{name}: version {version}, expected 1")
            layers.append(Layer(name.rstrip("0123456789"), tag=int(name.lstrip("tagskip"))))
            continue
        layer = _read_details(s)
        if innermost:  # the add_layer on the input: flags, x_grad, output, grad_final, factor
            if version not in (2, 3):
                raise s.fail(f"input add_layer version {version}")
            for _ in range(3):
                s.bool()
            for _ in range(3):
                s.tensor()
            if version == 3:
                s.int()
            innermost = False
        else:
            if version != 2:
                raise s.fail(f"add_layer version {version}, expected 2")
            _skip_layer_state(s)
        base = name.rstrip("0123456789")
        if layer.kind != base:
            raise ModelError(f"{p}: layer {len(layers)} is {layer.kind!r}, the {layout.name} "
                             f"layout expects {name!r}")
        if base == "add_prev":
            layer.tag = int(name[len(base):])
        layers.append(layer)
    layers.append(loss)
    if s.pos != len(s.data):
        raise s.fail(f"{len(s.data) - s.pos} bytes left after the network")
    return layers
