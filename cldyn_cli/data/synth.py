"""Deterministic synthetic infrared/visible street scenes with labels.

No real dataset can be downloaded here, so tests, demos, the default model and the task plugins
train and check on these scenes. They are built so that neither modality alone shows everything:
objects are warm in infrared but may be dark, fogged or camouflaged in visible light; texture,
road markings, signs and windows exist only in visible light; engines, exhausts, lamps and warm
spots exist only in infrared. Everything is vectorised numpy and depends only on the generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cldyn_cli.data.images import write_png
from cldyn_cli.errors import UserError

CLASSES = ("background", "person", "car", "bus", "motorcycle", "lamp", "truck")
"""Segmentation class index per pixel (0 = background)."""

DET_CLASSES = ("People", "Car", "Bus", "Motorcycle", "Lamp", "Truck")
"""Detection class names in M3FD's order; YOLO id = segmentation index - 1."""

CONDITIONS = ("day", "dusk", "night", "fog")
LAYOUTS = ("pairs", "m3fd", "fmb", "vt5000")
MIN_SIZE = 32

F32 = np.float32

# Real-world (height, width) in metres; perspective turns them into pixels.
_SIZES_M = {1: (1.7, 0.65), 2: (1.5, 4.4), 3: (3.1, 11.0), 4: (1.7, 2.0), 5: (7.0, 1.2), 6: (3.4, 8.0)}
_CLASS_P = np.array([0.33, 0.33, 0.07, 0.08, 0.09, 0.10])  # person, car, bus, motorcycle, lamp, truck

# Per condition: ambient light, light tint, sky top / horizon colours, visible noise, IR ground offset.
_LIGHT = {
    "day": (1.0, (1.0, 1.0, 1.0), (0.30, 0.50, 0.88), (0.72, 0.82, 0.95), 0.010, 0.06),
    "dusk": (0.42, (1.0, 0.80, 0.62), (0.22, 0.18, 0.38), (0.95, 0.58, 0.32), 0.020, 0.03),
    "night": (0.07, (0.70, 0.80, 1.0), (0.01, 0.01, 0.035), (0.05, 0.05, 0.09), 0.035, 0.0),
    "fog": (0.80, (1.0, 1.0, 1.0), (0.74, 0.76, 0.79), (0.80, 0.81, 0.83), 0.015, 0.02),
}


@dataclass(frozen=True)
class SceneOptions:
    """What objects a scene may hold. The defaults give the full street mix; a subset of classes and
    a minimum size make an easier detection set, so that a detector trained from scratch on a CPU
    gets good enough for base-versus-compensated comparisons to mean something."""

    classes: tuple[int, ...] | None = None  # segmentation indices (1..6) to draw; None: all, M3FD's mix
    min_height: float = 0.0  # smallest object height, as a fraction of the image height (capped by its class's room)

    def __post_init__(self) -> None:
        if self.classes is not None and (not self.classes or not set(self.classes) <= set(_SIZES_M)):
            raise UserError(f"object classes must be a non-empty subset of 1..6, got {self.classes}")
        if not 0.0 <= self.min_height <= 1.0:
            raise UserError(f"the minimum object height must be in [0, 1], got {self.min_height}")


@dataclass
class Scene:
    """One registered infrared/visible pair with its labels."""

    ir: np.ndarray  # (H, W) float32 in [0, 1]
    vis: np.ndarray  # (H, W, 3) float32 in [0, 1]
    mask: np.ndarray  # (H, W) uint8 index into CLASSES
    boxes: list[tuple[int, float, float, float, float]]  # YOLO: class id, cx, cy, w, h in [0, 1]
    saliency: np.ndarray  # (H, W) uint8, 255 on the warm (labelled) objects
    condition: str  # one of CONDITIONS


# ----------------------------------------------------------------------------------------------
# small helpers


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """Bilinearly upsampled random grid in [-1, 1]: cheap large-scale variation.

    Separable: rows are interpolated on the small grid, then columns with two fast `take`s
    (no BLAS, so no thread contention and bit-identical results everywhere).
    """
    gh = max(2, int(round(cells * h / max(h, w))) + 2)
    gw = max(2, int(round(cells * w / max(h, w))) + 2)
    grid = rng.random((gh, gw), dtype=F32) * 2 - 1
    y0, ty = _lerp_index(h, gh)
    rows = grid[y0] * (1 - ty)[:, None] + grid[y0 + 1] * ty[:, None]
    x0, tx = _lerp_index(w, gw)
    out = np.take(rows, x0, axis=1)
    out *= 1 - tx
    out += np.take(rows, x0 + 1, axis=1) * tx
    return out


def _lerp_index(n: int, g: int) -> tuple[np.ndarray, np.ndarray]:
    """Left neighbour and weight of n points spread over g samples."""
    f = np.linspace(0, g - 1.001, n, dtype=F32)
    i0 = f.astype(np.intp)
    return i0, f - i0


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance triangular noise from random bytes: several times faster than
    normal variates and indistinguishable as sensor noise."""
    n = int(np.prod(shape))
    b = np.frombuffer(rng.bytes(2 * n), np.uint8)
    x = b[:n].astype(F32)
    x += b[n:]
    x -= 255.0
    x *= F32(1 / 104.5)
    return x.reshape(shape)


def _frac(x: np.ndarray) -> np.ndarray:
    """Fractional part for periodic patterns; much faster than `x % 1.0`."""
    return x - np.floor(x)


def _box_blur(img: np.ndarray, r: int) -> np.ndarray:
    """Separable box blur: infrared optics are softer than visible ones (r is small: shifted sums)."""
    k = 2 * r + 1
    h, w = img.shape
    p = np.pad(img, r, mode="edge")
    rows = p[0:h].copy()
    for i in range(1, k):
        rows += p[i:i + h]
    out = rows[:, 0:w].copy()
    for i in range(1, k):
        out += rows[:, i:i + w]
    out *= F32(1 / (k * k))
    return out


def _window(shape: tuple[int, int], cy: float, cx: float, rad: float) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of the clipped square window around (cy, cx)."""
    h, w = shape
    y0, y1 = max(0, int(cy - rad)), min(h, int(cy + rad) + 1)
    x0, x1 = max(0, int(cx - rad)), min(w, int(cx + rad) + 1)
    yy = np.arange(y0, y1, dtype=F32)[:, None] + 0.5 - cy
    xx = np.arange(x0, x1, dtype=F32)[None, :] + 0.5 - cx
    return slice(y0, y1), slice(x0, x1), yy, xx


def _add_blob(img: np.ndarray, cy: float, cx: float, sigma: float, amp) -> None:
    """Add a Gaussian spot in place (heat in IR, light pools in the illumination map)."""
    sigma = max(sigma, 0.5)
    sy, sx, yy, xx = _window(img.shape[:2], cy, cx, 3 * sigma)
    if yy.size == 0 or xx.size == 0:
        return
    g = np.exp(-(yy * yy + xx * xx) / (2 * sigma * sigma))
    if img.ndim == 3:
        img[sy, sx] += g[..., None] * np.asarray(amp, F32)
    else:
        img[sy, sx] += g * F32(amp)


def _ell(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    """Ellipse in box-relative coordinates (heads, lamp heads, lights)."""
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def _circ(u: np.ndarray, v: np.ndarray, cu: float, cv: float, r_h: float, aspect: float) -> np.ndarray:
    """Circle of radius r_h (in object heights) in an object box of width/height = aspect."""
    return ((u - cu) * aspect) ** 2 + (v - cv) ** 2 <= r_h * r_h


def _rbox(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    """Axis-aligned rectangle in box-relative coordinates."""
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _colour(rng: np.random.Generator, palette: np.ndarray) -> np.ndarray:
    """A palette colour with random brightness: plausible yet varied paint, clothes, facades."""
    c = palette[rng.integers(len(palette))] * rng.uniform(0.8, 1.15)
    return np.clip(c, 0.02, 0.98).astype(F32)


_CAR_PAINT = np.array([[0.85, 0.85, 0.85], [0.08, 0.08, 0.09], [0.55, 0.06, 0.06], [0.1, 0.2, 0.5],
                       [0.45, 0.46, 0.48], [0.75, 0.7, 0.55], [0.1, 0.35, 0.2], [0.9, 0.75, 0.1]], F32)
_CLOTHES = np.array([[0.1, 0.1, 0.12], [0.2, 0.25, 0.45], [0.6, 0.1, 0.1], [0.85, 0.85, 0.8],
                     [0.35, 0.3, 0.2], [0.2, 0.4, 0.25], [0.9, 0.6, 0.1], [0.45, 0.45, 0.45]], F32)
_SKIN = np.array([[0.85, 0.65, 0.5], [0.6, 0.42, 0.3], [0.35, 0.22, 0.15]], F32)


# ----------------------------------------------------------------------------------------------
# objects: each returns a shape mask and its IR / albedo / light layers over a local window


@dataclass
class _Layers:
    """What one object paints, all shaped like its local window."""

    shape: np.ndarray
    ir: np.ndarray
    albedo: np.ndarray
    emit: np.ndarray


def _object(cls: int, rng: np.random.Generator, u: np.ndarray, v: np.ndarray, aspect: float,
            lights_on: bool, camo: np.ndarray | None) -> _Layers:
    """Draw class `cls` in local coordinates u, v in [0, 1] (left-right, top-bottom of its box)."""
    hh, ww = v.shape[0], u.shape[1]
    emit = np.zeros((hh, ww, 3), F32)
    albedo = np.zeros((hh, ww, 3), F32)
    ir = np.zeros((hh, ww), F32)
    shape = np.zeros((hh, ww), bool)

    def paint(part: np.ndarray, t: float, col) -> None:
        ir[part] = t
        albedo[part] = col
        np.logical_or(shape, part, out=shape)

    def heat(cu: float, cv: float, s: float, amp: float) -> None:
        """IR-only hot spot (engine, exhaust, lamp bulb): never drawn in visible light."""
        ir[...] += amp * np.exp(-(((u - cu) * aspect) ** 2 + (v - cv) ** 2) / (2 * s * s))

    def light(part: np.ndarray, col) -> None:
        emit[part] = col

    if cls == 1:  # person
        body = rng.uniform(0.66, 0.82)
        shirt = camo if camo is not None else _colour(rng, _CLOTHES)
        pants = _colour(rng, _CLOTHES)
        step = rng.uniform(-0.08, 0.08)
        lean = step * (v - 0.53)
        legs = (v > 0.53) & ((np.abs(u - 0.36 - lean) < 0.13) | (np.abs(u - 0.64 + lean) < 0.13))
        paint(legs, body - 0.02, pants)
        torso = (v > 0.13) & (v <= 0.56) & (np.abs(u - 0.5) < 0.46 - 0.12 * (v - 0.13))
        paint(torso, body, shirt)
        if rng.random() < 0.4:  # striped shirt: visible-only texture
            albedo[torso & (((v * 14) % 1.0) < 0.45)] *= 0.5
        paint(_ell(u, v, 0.5, 0.075, 0.24, 0.075), min(body + 0.13, 0.97), _colour(rng, _SKIN))
    elif cls in (2, 3, 6):  # car, bus, truck: side view, facing right (flipped by the caller)
        body_t = rng.uniform(0.58, 0.70)
        paint_c = camo if camo is not None else _colour(rng, _CAR_PAINT)
        glass = np.array([0.12, 0.15, 0.2], F32)
        tyre = np.array([0.05, 0.05, 0.05], F32)
        if cls == 2:
            hw = 0.2 + 0.13 * (v - 0.06) / 0.34
            cabin = (v > 0.06) & (v <= 0.42) & (np.abs(u - 0.45) < hw)
            paint(cabin, body_t, paint_c)
            paint((np.abs((u - 0.5) / 0.5) ** 4 + np.abs((v - 0.62) / 0.24) ** 4) <= 1.0, body_t, paint_c)
            win = (v > 0.11) & (v < 0.38) & (np.abs(u - 0.45) < hw - 0.05) & (np.abs(u - 0.46) > 0.015)
            albedo[win] = glass
            ir[win] -= 0.04
            wheels = [(0.2, 0.85, 0.15), (0.8, 0.85, 0.15)]
            engine, exhaust = (0.86, 0.6), (0.03, 0.84)
            head, tail = _ell(u, v, 0.975, 0.55, 0.03, 0.06), _ell(u, v, 0.02, 0.5, 0.025, 0.06)
        elif cls == 3:
            paint((np.abs((u - 0.5) / 0.5) ** 6 + np.abs((v - 0.45) / 0.43) ** 6) <= 1.0, body_t, paint_c)
            win = (v > 0.13) & (v < 0.4) & (u > 0.04) & (u < 0.97) & (((u * 9) % 1.0) < 0.82)
            albedo[win] = glass
            if rng.random() < 0.5:  # livery stripe: visible only
                albedo[(v > 0.55) & (v < 0.62) & (u > 0.02) & (u < 0.98)] = _colour(rng, _CAR_PAINT)
            wheels = [(0.15, 0.88, 0.12), (0.83, 0.88, 0.12)]
            engine, exhaust = (0.06, 0.65), (0.02, 0.86)
            head, tail = _ell(u, v, 0.985, 0.7, 0.015, 0.06), _ell(u, v, 0.015, 0.7, 0.015, 0.06)
        else:
            trailer = camo if camo is not None else _colour(rng, _CAR_PAINT)
            paint(_rbox(u, v, 0.0, 0.7, 0.0, 0.8), body_t - 0.04, trailer)
            paint(_rbox(u, v, 0.73, 1.0, 0.25, 0.86), body_t + 0.03, paint_c)
            paint(_rbox(u, v, 0.0, 1.0, 0.78, 0.88), body_t, tyre * 3)
            win = _rbox(u, v, 0.8, 0.97, 0.3, 0.5)
            albedo[win] = glass
            if rng.random() < 0.6:  # lettering on the trailer: visible only
                letters = _rbox(u, v, 0.1, 0.6, 0.3, 0.45) & (((u * 40) % 1.0) < 0.5)
                albedo[letters] = 1.0 - albedo[letters]
            wheels = [(0.12, 0.88, 0.12), (0.3, 0.88, 0.12), (0.87, 0.88, 0.12)]
            engine, exhaust = (0.85, 0.7), (0.75, 0.3)
            head, tail = _ell(u, v, 0.99, 0.7, 0.012, 0.05), _ell(u, v, 0.01, 0.7, 0.012, 0.05)
        for cu, cv, r in wheels:
            paint(_circ(u, v, cu, cv, r, aspect), body_t + 0.08, tyre)
        heat(*engine, 0.12, 0.28)  # engine block: IR only
        heat(*exhaust, 0.04, 0.35)  # exhaust pipe: IR only
        if lights_on:
            light(head & shape, (1.0, 0.97, 0.85))
            light(tail & shape, (0.9, 0.05, 0.05))
    elif cls == 4:  # motorcycle with rider, facing right
        body = rng.uniform(0.66, 0.8)
        for cu, cv in ((0.18, 0.83), (0.82, 0.83)):
            paint(_circ(u, v, cu, cv, 0.16, aspect), body + 0.03, (0.05, 0.05, 0.05))
        paint(_ell(u, v, 0.5, 0.68, 0.36, 0.1), body - 0.04, camo if camo is not None else _colour(rng, _CAR_PAINT))
        paint(_rbox(u, v, 0.36, 0.62, 0.14, 0.62), body, _colour(rng, _CLOTHES))
        paint(_ell(u, v, 0.5, 0.08, 0.14, 0.08), min(body + 0.1, 0.97), _colour(rng, _CLOTHES))
        heat(0.48, 0.73, 0.06, 0.3)
        if lights_on:
            light(_ell(u, v, 0.9, 0.58, 0.05, 0.04) & shape, (1.0, 0.97, 0.85))
    else:  # lamp post: its head is hot in IR; lit in visible light only at dusk and night
        pole_t = rng.uniform(0.57, 0.64)
        du = abs(float(u[0, 1] - u[0, 0])) if ww > 1 else 1.0
        paint((np.abs(u - 0.5) < max(0.16, 0.51 * du)) & (v > 0.05), pole_t, (0.35, 0.36, 0.38))  # >= 1 px
        head = _ell(u, v, 0.5, 0.05, 0.5, 0.05)
        paint(head, pole_t + 0.1, (0.5, 0.5, 0.5))
        heat(0.5, 0.05, 0.06, 0.35)
        if lights_on:
            light(head, (1.0, 0.9, 0.65))
    np.clip(ir, 0.0, 1.0, out=ir)
    return _Layers(shape, ir, albedo, emit)


# ----------------------------------------------------------------------------------------------


@dataclass
class _Street:
    """The scene being painted: geometry, the background material map and the image layers.

    The painting stages below fill it in a fixed order; every random draw happens in that order,
    so one generator state always gives one scene.
    """

    h: int
    w: int
    cond: str
    lights_on: bool
    yy: np.ndarray  # (H, 1) pixel-centre rows
    xx: np.ndarray  # (1, W) pixel-centre columns
    horizon: float
    vx: float  # vanishing point's column
    t: np.ndarray  # (H, 1): 0 at the horizon, 1 at the bottom row
    road_w: float = 0.0
    half: np.ndarray | None = None  # the road's half width per row
    dx: np.ndarray | None = None  # distance from the vanishing column
    road: np.ndarray | None = None
    mat: np.ndarray | None = None  # 0 sky, 1 trees, 2 grass, 3 road, 4.. buildings
    albedo: np.ndarray | None = None
    ir: np.ndarray | None = None
    emit: np.ndarray | None = None
    depth: np.ndarray | None = None
    coarse: np.ndarray | None = None
    s: np.ndarray | None = None  # (H, 1) sky gradient


def make_scene(rng: np.random.Generator, width: int, height: int, options: SceneOptions = SceneOptions()) -> Scene:
    """One street scene whose every random choice comes from `rng` (same state, same scene)."""
    h, w = int(height), int(width)
    if h < MIN_SIZE or w < MIN_SIZE:
        raise UserError(f"scene size {w}x{h} is too small; use at least {MIN_SIZE}x{MIN_SIZE}")
    cond = CONDITIONS[rng.integers(len(CONDITIONS))]
    ambient, tint, sky_top, sky_hor, vis_sigma, ir_sun = _LIGHT[cond]
    ambient *= rng.uniform(0.7, 1.5)  # from barely visible to clearly visible objects
    lights_on = cond in ("dusk", "night") or (cond == "fog" and rng.random() < 0.5)

    yy = np.arange(h, dtype=F32)[:, None] + 0.5
    xx = np.arange(w, dtype=F32)[None, :] + 0.5
    horizon = h * rng.uniform(0.3, 0.5)
    vx = w * rng.uniform(0.3, 0.7)
    t = np.clip((yy - horizon) / (h - horizon), 0.0, 1.0)
    street = _Street(h, w, cond, lights_on, yy, xx, horizon, vx, t)
    windows = _background(street, rng, sky_top, sky_hor, ir_sun)
    _windows(street, rng, windows)
    _road_markings(street, rng)
    _traffic_signs(street, rng)
    for _ in range(rng.integers(0, 4)):  # IR-only warm spots: vents, manholes, sun-warmed patches
        _add_blob(street.ir, rng.uniform(horizon * 0.85, h), rng.uniform(0, w), w * rng.uniform(0.005, 0.03),
                  rng.uniform(0.1, 0.2))
    light_map = np.full((h, w), ambient, F32)
    inst, boxes_px = _draw_objects(street, rng, _place_objects(street, rng, options), light_map)
    vis, ir = _camera_images(street, rng, light_map, tint, sky_hor, vis_sigma)
    mask, boxes = _labels(inst, boxes_px, h, w)
    saliency = np.where(mask > 0, np.uint8(255), np.uint8(0))
    return Scene(ir=ir, vis=vis, mask=mask, boxes=boxes, saliency=saliency, condition=cond)


def _background(st: _Street, rng: np.random.Generator, sky_top, sky_hor, ir_sun: float) -> list:
    """Sky, trees, grass, road and buildings as a material map, shaded in one go; returns the
    buildings' window grids (rows, cols, spacing y, spacing x), drawn after shading."""
    h, w, yy, xx, horizon, t = st.h, st.w, st.yy, st.xx, st.horizon, st.t
    ground = yy >= horizon
    mat = np.zeros((h, w), np.uint8)
    cols = [np.zeros(3, F32), np.array([0.12, 0.26, 0.1], F32),
            _colour(rng, np.array([[0.2, 0.35, 0.12], [0.4, 0.35, 0.22], [0.3, 0.32, 0.2]], F32)),
            np.array([0.3, 0.3, 0.31], F32)]
    texs = [0.0, 0.45, 0.5, 0.25]  # visible texture strength; IR only gets the slow variation
    temps = [0.0, rng.uniform(0.2, 0.28), rng.uniform(0.24, 0.32), rng.uniform(0.3, 0.38)]
    far = [50.0, 30.0, 0.0, 0.0]  # fog distance for what stands on the horizon (0: from the row)

    tree_h = (np.clip(_smooth_noise(rng, 1, w, 10)[0] * 0.6 + 0.4, 0, 1) * h * rng.uniform(0.03, 0.16))[None, :]
    mat[(yy < horizon) & (yy > horizon - tree_h)] = 1
    windows = []
    for _ in range(rng.integers(0, 5)):
        bw, bx0, bh = w * rng.uniform(0.08, 0.3), rng.uniform(-0.1, 1.0) * w, horizon * rng.uniform(0.2, 0.8)
        rows = slice(max(0, int(horizon - bh)), int(np.ceil(horizon)))
        cl = slice(max(0, int(bx0)), min(w, int(bx0 + bw)))
        cols.append(_colour(rng, np.array([[0.55, 0.5, 0.45], [0.6, 0.6, 0.62], [0.5, 0.35, 0.3]], F32)))
        texs.append(0.15)
        temps.append(rng.uniform(0.3, 0.4))
        far.append(rng.uniform(15, 30))
        sy, sx = rng.uniform(0.03, 0.06) * h, rng.uniform(0.02, 0.04) * w
        if cl.start < cl.stop and rows.start < rows.stop:
            mat[rows, cl] = len(cols) - 1
            windows.append((rows, cl, sy, sx))
    st.road_w = w * rng.uniform(0.3, 0.6)
    st.half = st.road_w * t + 0.5
    st.dx = np.abs(xx - st.vx)
    st.road = ground & (st.dx < st.half)
    mat[int(np.ceil(horizon - 0.5)):] = 2
    mat[st.road] = 3

    tex = 0.5 * _noise(rng, (h, w)) + _smooth_noise(rng, h, w, max(8.0, max(h, w) / 12))
    st.coarse = _smooth_noise(rng, h, w, 6)
    cols_a, texs_a = np.stack(cols).astype(F32), np.asarray(texs, F32)
    st.albedo = np.take(cols_a, mat, axis=0) * (1 + np.take(texs_a, mat) * tex)[..., None]
    sky = mat == 0
    st.s = np.clip(yy / max(horizon, 1.0), 0.0, 1.0)
    sky_ir = rng.uniform(0.04, 0.14) + 0.05 * st.s
    st.ir = np.where(sky, sky_ir, np.take(np.asarray(temps, F32), mat) + ir_sun) + 0.03 * st.coarse
    far_a = np.take(np.asarray(far, F32), mat)
    st.depth = np.where(far_a > 0, far_a, 1.0 / (t + 0.02)).astype(F32)  # relative distance, 1 near the camera
    sky_col = np.asarray(sky_top, F32) * (1 - st.s[..., None]) + np.asarray(sky_hor, F32) * st.s[..., None]
    st.emit = np.where(sky[..., None], sky_col, F32(0))
    if st.cond in ("day", "dusk"):  # clouds: visible only
        st.emit *= 1 + 0.12 * np.clip(st.coarse, 0, 1)[..., None]
    st.mat = mat
    return windows


def _windows(st: _Street, rng: np.random.Generator, windows: list) -> None:
    """Building windows: visible only (glass is as cold as the wall in IR), some lit at night."""
    for rows, cl, sy, sx in windows:
        if sx < 3 or sy < 3:
            continue
        gy = (st.yy[rows] - rows.start) / sy
        gx = (st.xx[:, cl] - cl.start) / sx
        win = (_frac(gx) < 0.55) & (_frac(gy) < 0.5) & (gy > 0.6) & (st.mat[rows, cl] >= 4)
        st.albedo[rows, cl][win] = (0.15, 0.18, 0.24)
        if st.lights_on:
            lit = rng.random((int(gy.max()) + 1, int(gx.max()) + 1)) < 0.3
            st.emit[rows, cl][win & lit[gy.astype(np.intp)[:, :1], gx.astype(np.intp)[:1, :]]] = (0.9, 0.75, 0.4)


def _road_markings(st: _Street, rng: np.random.Generator) -> None:
    """Lane lines, edge lines and sometimes a zebra crossing: visible only."""
    t, road, dx, half = st.t, st.road, st.dx, st.half
    line = np.maximum(0.6, 0.007 * st.w * t)
    dash = _frac(6.0 / (t + 0.05) + rng.random()) < 0.5
    marks = road & (((dx < line) & dash) | (np.abs(dx - 0.9 * half) < line))
    if rng.random() < 0.35:  # zebra crossing
        t0 = rng.uniform(0.4, 0.8)
        marks |= road & (np.abs(t - t0) < 0.04) & (_frac((st.xx - st.vx) / np.maximum(1.0, 0.05 * st.road_w * t)) < 0.5)
    st.albedo[marks] = (0.85, 0.85, 0.8)


def _traffic_signs(st: _Street, rng: np.random.Generator) -> None:
    """Signs on poles beside the road: visible only (at ambient temperature, invisible in IR)."""
    h, w, yy, xx = st.h, st.w, st.yy, st.xx
    for _ in range(rng.integers(0, 3)):
        ts = rng.uniform(0.15, 0.9)
        base = st.horizon + ts * (h - st.horizon)
        ppm = ts * h * 0.5 / 1.7
        sgx = st.vx + (1 if rng.random() < 0.5 else -1) * (st.road_w * ts * rng.uniform(1.05, 1.3) + 0.5)
        rad = max(2.0, 0.4 * ppm)
        pl = (base - 2.3 * ppm)
        rows = slice(max(0, int(pl - rad)), max(0, min(h, int(np.ceil(base)))))
        cl = slice(max(0, int(sgx - rad)), max(0, min(w, int(sgx + rad) + 1)))
        ly, lx = yy[rows], xx[:, cl]
        pole = (np.abs(lx - sgx) < max(0.5, 0.05 * ppm)) & (ly < base) & (ly > pl)
        plate = (np.abs(lx - sgx) < max(1.0, 0.35 * ppm)) & (np.abs(ly - pl) < max(1.0, 0.35 * ppm))
        st.albedo[rows, cl][pole] = (0.5, 0.5, 0.5)
        st.albedo[rows, cl][plate] = _colour(rng, np.array([[0.8, 0.1, 0.1], [0.1, 0.25, 0.75], [0.95, 0.8, 0.1]],
                                                           F32))
        st.albedo[rows, cl][plate & (np.abs(ly - pl) < max(0.5, 0.12 * ppm))] = (0.95, 0.95, 0.95)
        st.emit[rows, cl][pole | plate] = 0.0


def _place_objects(st: _Street, rng: np.random.Generator, options: SceneOptions) -> list[tuple]:
    """1-6 labelled objects (always a person or a car, when allowed) with their distance, column and
    pixel size, sorted far to near so that near ones occlude far ones."""
    h, w = st.h, st.w
    n_obj = int(rng.integers(1, 7))
    allowed = np.arange(1, 7) if options.classes is None else np.array(sorted(set(options.classes)))
    p = _CLASS_P if options.classes is None else _CLASS_P[allowed - 1] / _CLASS_P[allowed - 1].sum()
    classes = rng.choice(allowed, size=n_obj, p=p)
    common = np.intersect1d(allowed, (1, 2))
    if common.size and not np.isin(classes, common).any():
        classes[0] = common[rng.integers(common.size)]  # people or cars in every scene
    k = h * 0.5 / 1.7  # pixels per metre at the bottom row
    placed = []
    for cls in classes:
        hm, wm = _SIZES_M[int(cls)]
        view_rear = cls == 2 and rng.random() < 0.35
        if view_rear:
            wm = 1.9
        t_max = min(1.0, 0.7 * h / (k * hm), 0.9 * w / (k * wm))  # large classes stay further away
        t_min = min(t_max, options.min_height * h / (k * hm))
        ts = t_min + rng.uniform(0.05, 1.0) ** 1.4 * (t_max - t_min)  # mostly small, some large
        ph, pw = k * hm * ts, k * wm * ts
        if ph < 4:
            pw, ph = pw * 4 / ph, 4.0
        pw = max(pw, 3.0)
        if cls == 1:
            cx = rng.uniform(0, w)
        elif cls == 5:
            cx = st.vx + (1 if rng.random() < 0.5 else -1) * (st.road_w * ts * rng.uniform(1.05, 1.3) + 0.5)
        else:
            cx = st.vx + rng.uniform(-0.8, 0.8) * st.road_w * ts
        cx = float(np.clip(cx, 0, w))  # at least half in view, so the nearest object is always labelled
        placed.append((ts, int(cls), cx, st.horizon + ts * (h - st.horizon), pw, ph, view_rear))
    placed.sort(key=lambda p: p[0])
    return placed


def _draw_objects(st: _Street, rng: np.random.Generator, placed: list[tuple], light_map: np.ndarray
                  ) -> tuple[np.ndarray, list]:
    """Paint the objects into every layer; returns the instance map and (index, class, window) per object."""
    h, w = st.h, st.w
    inst = np.zeros((h, w), np.uint8)
    boxes_px = []
    for idx, (ts, cls, cx, base, pw, ph, view_rear) in enumerate(placed, start=1):
        x0, y0 = cx - pw / 2, base - ph
        r0, r1 = max(0, int(np.floor(y0))), min(h, int(np.ceil(base)))
        c0, c1 = max(0, int(np.floor(x0))), min(w, int(np.ceil(x0 + pw)))
        if r0 >= r1 or c0 >= c1:
            continue
        u = (np.arange(c0, c1, dtype=F32)[None, :] + 0.5 - x0) / pw
        v = (np.arange(r0, r1, dtype=F32)[:, None] + 0.5 - y0) / ph
        flip = cls in (2, 3, 4, 6) and rng.random() < 0.5
        if flip:
            u = 1 - u
        camo = None
        if rng.random() < 0.3:  # camouflage: colour close to what is behind the object
            camo = np.clip(st.albedo[r0:r1, c0:c1].reshape(-1, 3).mean(0) * rng.uniform(0.85, 1.15), 0.02, 0.98)
        if view_rear:
            lay = _rear_car(rng, u, v, pw / ph, st.lights_on, camo)
        else:
            lay = _object(cls, rng, u, v, pw / ph, st.lights_on, camo)
        m = lay.shape
        sl = (slice(r0, r1), slice(c0, c1))
        st.ir[sl][m] = lay.ir[m]
        st.albedo[sl][m] = lay.albedo[m]
        st.emit[sl][m] = lay.emit[m]
        st.depth[sl][m] = 1.0 / (ts + 0.02)
        inst[sl][m] = idx
        boxes_px.append((idx, cls, sl))
        if cls == 5 and st.lights_on:  # light pool under a lit lamp
            _add_blob(light_map, base, cx, ph * 0.35, 0.9)
        if cls in (2, 3, 6) and st.lights_on and not view_rear:  # headlight beam on the road ahead
            _add_blob(light_map, base, cx + (-1 if flip else 1) * pw * 0.8, ph * 0.5, 0.5)
    return inst, boxes_px


def _camera_images(st: _Street, rng: np.random.Generator, light_map: np.ndarray, tint, sky_hor,
                   vis_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(visible, infrared) as the cameras see them: lighting, fog, optics and sensor noise."""
    h, w = st.h, st.w
    lit = st.albedo * (np.minimum(light_map, 1.6)[..., None] * np.asarray(tint, F32)) + st.emit
    ir = st.ir
    if st.cond == "fog":
        dens = rng.uniform(0.04, 0.1)
        trans = np.exp(-dens * st.depth)[..., None]
        fog_col = np.asarray(sky_hor, F32) * (lit.mean() * 0.3 + 0.75)
        lit = lit * trans + fog_col * (1 - trans)
        ir_trans = np.exp(-dens * 0.15 * st.depth)
        ir = ir * ir_trans + 0.2 * (1 - ir_trans)
    lit += _noise(rng, (h, w, 3)) * F32(vis_sigma)
    vis = np.clip(lit, 0.0, 1.0).astype(F32)

    # infrared: softer optics, temporal noise and column fixed-pattern noise
    blur = round(min(h, w) / 320)
    if blur:
        ir = _box_blur(ir.astype(F32), blur)
    ir += _noise(rng, (h, w)) * F32(rng.uniform(0.008, 0.02))
    ir += rng.normal(0.0, 0.006, size=(1, w)).astype(F32)
    return vis, np.clip(ir, 0.0, 1.0).astype(F32)


def _labels(inst: np.ndarray, boxes_px: list, h: int, w: int
            ) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """The class mask and the YOLO boxes of what stays visible of each object."""
    lut = np.zeros(256, np.uint8)
    boxes: list[tuple[int, float, float, float, float]] = []
    for idx, cls, sl in boxes_px:
        lut[idx] = cls
        rows, cols = np.nonzero(inst[sl] == idx)
        if rows.size == 0:  # hidden behind nearer objects
            continue
        ya, yb = sl[0].start + rows.min(), sl[0].start + rows.max() + 1
        xa, xb = sl[1].start + cols.min(), sl[1].start + cols.max() + 1
        boxes.append((cls - 1, float(xa + xb) / (2 * w), float(ya + yb) / (2 * h), float(xb - xa) / w,
                      float(yb - ya) / h))
    return lut[inst], boxes


def _rear_car(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, aspect: float, lights_on: bool,
              camo: np.ndarray | None) -> _Layers:
    """A car seen from behind: exhaust heat low, tail lights in visible light when on."""
    hh, ww = v.shape[0], u.shape[1]
    ir = np.zeros((hh, ww), F32)
    albedo = np.zeros((hh, ww, 3), F32)
    emit = np.zeros((hh, ww, 3), F32)
    body_t = rng.uniform(0.58, 0.7)
    col = camo if camo is not None else _colour(rng, _CAR_PAINT)
    cabin = (v > 0.06) & (v <= 0.42) & (np.abs(u - 0.5) < 0.3 + 0.12 * (v - 0.06) / 0.36)
    body = (np.abs((u - 0.5) / 0.5) ** 4 + np.abs((v - 0.62) / 0.24) ** 4) <= 1.0
    wheels = _rbox(u, v, 0.04, 0.18, 0.8, 1.0) | _rbox(u, v, 0.82, 0.96, 0.8, 1.0)
    shape = cabin | body | wheels
    ir[shape] = body_t
    albedo[shape] = col
    albedo[wheels] = 0.05
    ir[wheels] = body_t + 0.06
    win = (v > 0.11) & (v < 0.38) & (np.abs(u - 0.5) < 0.25 + 0.12 * (v - 0.06) / 0.36)
    albedo[win] = (0.12, 0.15, 0.2)
    ir[win] -= 0.04
    albedo[_rbox(u, v, 0.38, 0.62, 0.66, 0.76)] = (0.95, 0.95, 0.9)  # number plate: visible only
    ir += 0.35 * np.exp(-(((u - 0.25) * aspect) ** 2 + (v - 0.9) ** 2) / (2 * 0.04 ** 2))
    tails = (_ell(u, v, 0.1, 0.55, 0.07, 0.05) | _ell(u, v, 0.9, 0.55, 0.07, 0.05)) & shape
    albedo[tails] = (0.6, 0.05, 0.05)
    if lights_on:
        emit[tails] = (0.95, 0.08, 0.05)
    np.clip(ir, 0.0, 1.0, out=ir)
    return _Layers(shape, ir, albedo, emit)


# ----------------------------------------------------------------------------------------------
# datasets on disk


def _save(arr: np.ndarray, path: Path) -> None:
    """8-bit PNG ("L" for 2-D arrays, RGB for 3-D); fast compression, since datasets are large."""
    write_png(arr, path, compress_level=3)


def _yolo(boxes: list[tuple[int, float, float, float, float]]) -> str:
    """YOLO label text: one `cls cx cy w h` line per box, 6 decimals (empty for no boxes)."""
    return "".join(f"{c} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}\n" for c, x, y, bw, bh in boxes)


def is_test(i: int) -> bool:
    """Split of scene i: every fifth scene (1, 6, 11, ...) is test, so n=2 already has both splits
    and a dataset with fewer scenes is a prefix of one with more."""
    return i % 5 == 1


def scene_for(seed: int, i: int, width: int, height: int, options: SceneOptions = SceneOptions()) -> Scene:
    """Scene i of the dataset with this seed: depends on (seed, i, options) only."""
    return make_scene(np.random.default_rng([seed, i]), width, height, options)


def write_dataset(out: Path, n: int, width: int, height: int, seed: int, layout: str,
                  progress: Callable[[int], None] | None = None, options: SceneOptions = SceneOptions()) -> None:
    """Write n scenes as 8-bit PNGs (and YOLO text labels) in one of the supported layouts.

    Layouts: ``pairs`` (ir/ vis/ labels/ masks/ saliency/), ``m3fd`` (ir|vi|labels/{train,test}),
    ``fmb`` ({train,test}/{Infrared,Visible,Label}), ``vt5000`` ({Train,Test}/{RGB,T,GT}).
    `progress` is called with the number of scenes written so far after each scene.
    """
    out = Path(out)
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if n < 1:
        raise UserError(f"number of scenes must be at least 1, got {n}")
    if width < MIN_SIZE or height < MIN_SIZE:
        raise UserError(f"scene size {width}x{height} is too small; use at least {MIN_SIZE}x{MIN_SIZE}")
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is a file; choose a folder")

    splits = {"pairs": ("", ""), "m3fd": ("train", "test"), "fmb": ("train", "test"), "vt5000": ("Train", "Test")}
    made: set[Path] = set()
    for i in range(n):
        scene = scene_for(seed, i, width, height, options)
        split = splits[layout][1 if is_test(i) else 0]
        stem = f"{i:05d}"
        if layout == "pairs":
            files = {out / "ir": scene.ir, out / "vis": scene.vis, out / "masks": scene.mask,
                     out / "saliency": scene.saliency}
            labels = out / "labels"
        elif layout == "m3fd":
            files = {out / "ir" / split: scene.ir, out / "vi" / split: scene.vis}
            labels = out / "labels" / split
        elif layout == "fmb":
            files = {out / split / "Infrared": scene.ir, out / split / "Visible": scene.vis,
                     out / split / "Label": scene.mask}
            labels = None
        else:
            files = {out / split / "T": scene.ir, out / split / "RGB": scene.vis, out / split / "GT": scene.saliency}
            labels = None
        for folder in [*files, *([labels] if labels is not None else [])]:
            if folder not in made:
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except (FileExistsError, NotADirectoryError):
                    raise UserError(f"cannot create folder {folder}: a file is in the way; remove it") from None
                made.add(folder)
        for folder, arr in files.items():
            _save(arr, folder / f"{stem}.png")
        if labels is not None:
            (labels / f"{stem}.txt").write_text(_yolo(scene.boxes))
        if progress is not None:
            progress(i + 1)
