"""Pathfinder images: dashed curves ("snakes") with circle markers, and their segmentation.

A snake is a chain of dashes. A dash is a segment of length `paddle_length` and width
`paddle_thickness`, drawn anti-aliased (coverage of `antialias_scale`^2 sub-pixel samples per
pixel, times the snake's contrast). Growing a snake from dash j (direction theta_j, end e_j):

    pivot      c = e_j + margin u(theta_j)                         u(t) = (sin t, cos t) in (y, x)
    next dash  from c + margin u(t) to c + (paddle_length + margin) u(t), with t drawn from
               p(t) ~ cos(min(continuity |t - theta_j|, pi/2))^2 * [end point free]
               over angles one pixel of arc apart; large `continuity` makes straighter snakes.

A dash is accepted if its pixels keep a gap of `margin` from every earlier dash (other than the
snake's previous one), i.e. its core misses the occupancy map, where every placed dash occupies
the pixels within width/2 + margin of its segment; a rejected direction is redrawn
`max_paddle_retrial` times, then the snake has failed. The image border (`padding` pixels) is
occupied from the start.

An image (`draw_image`): two main snakes of `contour_length` dashes whose first dashes start
`seed_distance` apart, grown one dash each in turn (restarted from scratch if either fails); then
up to `num_distractor_snakes` distractors of `distractor_length` dashes, each marked by a circle at
its start (each retried `max_distractor_retrial` times, skipped when it does not fit, and none
once less than 1% of the image is free); then the label (0 or 1, fair coin) and two circle
markers of radius `marker_radius`: one at the start of a random main snake and, for label 1, one at
that snake's end, for label 0 at the other snake's end.

Segmentation target, per pixel: 2 where a main snake connects the two markers (label 1), 1 on a
main snake that does not, 0 elsewhere (background, distractors, markers). A main snake's pixels
are those its dashes alone would light (a nonzero 8-bit value).
"""

import math

import numpy as np


def _window(center, radius, size):
    """Integer pixel bounds [lo, hi) of the square of `radius` around `center`, clipped to the image."""
    lo = np.maximum(np.floor(np.asarray(center) - radius).astype(int), 0)
    hi = np.minimum(np.ceil(np.asarray(center) + radius).astype(int) + 1, size)
    return lo, hi


def _segment_distance(py, px, a, b):
    """Distance from points (py, px) to the segment a-b, and the signed offset along it."""
    d = np.subtract(b, a, dtype=float)
    length = math.hypot(*d)
    u = d / length
    ry, rx = py - a[0], px - a[1]
    along = ry * u[0] + rx * u[1]
    across = np.abs(ry * u[1] - rx * u[0])
    beyond = np.maximum(np.maximum(-along, along - length), 0)
    return np.hypot(beyond, across), along, across, length


class Canvas:
    """The image being drawn: intensities, the occupancy map, and each main snake's own layer."""

    def __init__(self, size, padding, aa):
        self.size, self.aa = size, aa
        self.image = np.zeros((size, size))
        self.occupied = np.zeros((size, size), dtype=bool)
        self.occupied[:padding], self.occupied[-padding:] = True, True
        self.occupied[:, :padding], self.occupied[:, -padding:] = True, True

    def _subsamples(self, lo, hi):
        """Sub-pixel sample coordinates of the window [lo, hi): arrays (h, w, aa, aa)."""
        offsets = (np.arange(self.aa) + 0.5) / self.aa - 0.5
        ys = np.arange(lo[0], hi[0])[:, None, None, None] + offsets[None, None, :, None]
        xs = np.arange(lo[1], hi[1])[None, :, None, None] + offsets[None, None, None, :]
        return ys, xs

    def dash(self, a, b, thickness, margin):
        """The dash a-b as (window lo, hi, footprint, core): the pixels whose centres lie within
        thickness/2 + margin of the segment (what it blocks) and within thickness/2 (what it
        needs free)."""
        lo, hi = _window((np.add(a, b)) / 2, math.dist(a, b) / 2 + thickness / 2 + margin + 1, self.size)
        py, px = np.arange(lo[0], hi[0])[:, None], np.arange(lo[1], hi[1])[None, :]
        distance = _segment_distance(py, px, a, b)[0]
        return lo, hi, distance <= thickness / 2 + margin, distance <= thickness / 2

    def coverage(self, a, b, thickness):
        """Window and anti-aliased coverage of the dash a-b (a rectangle of that width)."""
        lo, hi = _window((np.add(a, b)) / 2, math.dist(a, b) / 2 + thickness / 2 + 1, self.size)
        ys, xs = self._subsamples(lo, hi)
        _, along, across, length = _segment_distance(ys, xs, a, b)
        return lo, hi, ((along >= 0) & (along <= length) & (across <= thickness / 2)).mean(axis=(2, 3))

    def circle(self, center, radius):
        lo, hi = _window(center, radius + 1, self.size)
        ys, xs = self._subsamples(lo, hi)
        inside = (ys - center[0]) ** 2 + (xs - center[1]) ** 2 <= radius**2
        return lo, hi, inside.mean(axis=(2, 3))

    def fits(self, dash, ignore=None):
        """Whether a dash's core misses the occupancy map (without the `ignore` footprint)."""
        lo, hi, _, core = dash
        occupied = self.occupied[lo[0] : hi[0], lo[1] : hi[1]]
        if ignore is not None:
            occupied = occupied & ~_crop(ignore, lo, hi)
        return not (occupied & core).any()

    def paint(self, layer, lo, hi, values, scale=1.0):
        view = layer[lo[0] : hi[0], lo[1] : hi[1]]
        np.maximum(view, scale * values, out=view)

    def occupy(self, dash):
        lo, hi, footprint, _ = dash
        self.occupied[lo[0] : hi[0], lo[1] : hi[1]] |= footprint


def _crop(dash, lo, hi):
    """The footprint of `dash` on the window [lo, hi)."""
    dlo, dhi, footprint, _ = dash
    out = np.zeros((hi[0] - lo[0], hi[1] - lo[1]), dtype=bool)
    top, bottom = np.maximum(lo, dlo), np.minimum(hi, dhi)
    if (bottom > top).all():
        out[top[0] - lo[0] : bottom[0] - lo[0], top[1] - lo[1] : bottom[1] - lo[1]] = footprint[
            top[0] - dlo[0] : bottom[0] - dlo[0], top[1] - dlo[1] : bottom[1] - dlo[1]
        ]
    return out


def _unit(theta):
    return np.array([math.sin(theta), math.cos(theta)])


class Snake:
    """A snake being grown: its dashes so far (footprints and end points), direction and end."""

    def __init__(self, canvas, s, margin):
        self.canvas, self.s, self.margin = canvas, s, margin
        self.dashes, self.segments, self.theta = [], [], None
        # Directions of the next dash: one pixel of arc apart on the circle it ends on.
        self.radius = s.paddle_length + margin
        self.angles = np.arange(0, 2 * np.pi, 1 / self.radius)
        self.circle = self.radius * np.stack([np.sin(self.angles), np.cos(self.angles)])  # (2, K)

    @property
    def start(self):
        return self.segments[0][0]

    @property
    def end(self):
        return self.segments[-1][1]

    def place(self, a, theta):
        """Add the dash from `a` in direction `theta` if it fits; True if placed."""
        s = self.s
        b = a + s.paddle_length * _unit(theta)
        if not ((b >= s.padding) & (b <= s.size - 1 - s.padding)).all():
            return False
        dash = self.canvas.dash(a, b, s.paddle_thickness, self.margin)
        if not self.canvas.fits(dash, ignore=self.dashes[-1] if self.dashes else None):
            return False
        if self.dashes:  # the previous dash now blocks later ones
            self.canvas.occupy(self.dashes[-1])
        self.dashes.append(dash)
        self.segments.append((a, b))
        self.theta = theta
        return True

    def paint(self, layer, contrast):
        """Draw the dashes, anti-aliased, at intensity `contrast` into `layer`."""
        for a, b in self.segments:
            self.canvas.paint(layer, *self.canvas.coverage(a, b, self.s.paddle_thickness), contrast)

    def seed(self, rng, a=None, tries=50):
        """Place the first dash at `a` (or at a random free pixel), in a random direction."""
        for _ in range(tries):
            theta = math.radians(rng.integers(-180, 180))
            start = a if a is not None else self._free_pixel(rng)
            if start is None:
                return False
            if self.place(np.asarray(start, dtype=float), theta):
                return True
        return False

    def _free_pixel(self, rng):
        free = np.flatnonzero(~self.canvas.occupied)
        if free.size == 0:
            return None
        return np.array(divmod(int(free[rng.integers(free.size)]), self.canvas.size), dtype=float)

    def extend(self, rng):
        """Add one dash after the last, turning by a continuity-weighted random angle."""
        s, m, angles = self.s, self.margin, self.angles
        pivot = self.end + m * _unit(self.theta)
        ends = pivot[:, None] + self.circle  # (2, K)
        turn = np.abs((angles - self.theta + np.pi) % (2 * np.pi) - np.pi)
        weight = np.cos(np.minimum(turn * s.continuity, np.pi / 2)).clip(min=0) ** 2
        inside = ((ends >= s.padding) & (ends <= s.size - 1 - s.padding)).all(axis=0)
        weight[~inside] = 0
        yx = np.rint(ends[:, inside]).astype(int)
        weight[np.flatnonzero(inside)[self.canvas.occupied[yx[0], yx[1]]]] = 0
        cumulative = np.cumsum(weight)
        if cumulative[-1] < 1e-4:
            return False
        for _ in range(s.max_paddle_retrial + 1):
            theta = angles[np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")]
            if self.place(pivot + m * _unit(theta), theta):
                return True
        return False

    def finish(self):
        """Mark the last dash as occupied (the snake is complete)."""
        self.canvas.occupy(self.dashes[-1])


def draw_image(s, rng):
    """One sample: (image uint8 (R, R), mask uint8 (R, R) in {0, 1, 2}, label 0/1, markers).
    `s`: the settings (attributes as in __main__.SETTINGS); `rng`: a numpy Generator."""
    label = int(rng.integers(2))
    margin = s.paddle_margins[rng.integers(len(s.paddle_margins))]
    canvas, snakes = None, None
    while canvas is None:
        canvas, snakes = _two_snakes(s, rng, margin)
    layers = [np.zeros((s.size, s.size)) for _ in snakes]
    for snake, layer in zip(snakes, layers):
        snake.paint(layer, s.snake_contrast)
        np.maximum(canvas.image, layer, out=canvas.image)
    for _ in range(s.num_distractor_snakes):
        if (~canvas.occupied).mean() < 0.01:
            break
        for _ in range(s.max_distractor_retrial + 1):
            occupied = canvas.occupied.copy()
            snake = Snake(canvas, s, margin)
            if snake.seed(rng) and all(snake.extend(rng) for _ in range(s.distractor_length - 1)):
                snake.finish()
                snake.paint(canvas.image, s.snake_contrast)
                canvas.paint(canvas.image, *canvas.circle(snake.start, s.marker_radius))
                break
            canvas.occupied = occupied
    origin = int(rng.integers(2))
    terminal = origin if label else 1 - origin
    markers = [snakes[origin].start, snakes[terminal].end]
    for center in markers:
        canvas.paint(canvas.image, *canvas.circle(center, s.marker_radius))
    to_uint8 = lambda a: np.rint(255 * a.clip(0, 1)).astype(np.uint8)  # noqa: E731
    mask = np.zeros((s.size, s.size), dtype=np.uint8)
    for i, layer in enumerate(layers):
        on = to_uint8(layer) > 0
        mask[on] = np.maximum(mask[on], 2 if label and i == origin else 1)
    return to_uint8(canvas.image), mask, label, np.array(markers)


def _two_snakes(s, rng, margin):
    """The two main snakes grown in turn on a fresh canvas, or (None, None) when they do not fit."""
    canvas = Canvas(s.size, s.padding, s.antialias_scale)
    snakes = [Snake(canvas, s, margin) for _ in range(2)]
    lo, hi = 2 * s.seed_distance, s.size - 2 * s.seed_distance
    if hi <= lo:
        raise ValueError(f"seed_distance={s.seed_distance} leaves no room at resolution {s.size}")
    first = rng.integers(lo, hi, size=2)
    angle = math.radians(rng.integers(0, 360))
    second = np.rint(first + s.seed_distance * _unit(angle))
    tries = s.max_paddle_retrial + 1
    if not (snakes[0].seed(rng, first, tries) and snakes[1].seed(rng, second, tries)):
        return None, None
    for _ in range(s.contour_length - 1):
        if not all(snake.extend(rng) for snake in snakes):
            return None, None
    for snake in snakes:
        snake.finish()
    return canvas, snakes
