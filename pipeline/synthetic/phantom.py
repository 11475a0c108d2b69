"""Seeded synthetic CT anatomy in Hounsfield units.

A :class:`Phantom` is one imaginary patient: its body outline, organs, lungs with vessels and
airways, vertebrae and ribs with cortex and marrow are drawn from one seed, and
:meth:`Phantom.slice_hu` evaluates the anatomy at a table position ``z_mm`` so that neighbouring
slices of a series look alike. :func:`acquire` adds what a scanner adds (point-spread blur, slightly
correlated quantum noise, the reconstruction circle).

The same code makes ``sample_dicoms/`` (see :mod:`pipeline.synthetic.samples`) and the training data of the
denoiser (see :mod:`pipeline.synthetic.references`), from disjoint seed ranges, so the model is never trained on the
images it is evaluated on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

# Nominal attenuation of each tissue in HU (typical published values for 120 kVp).
TISSUE_HU: dict[str, float] = {
    "air": -1000.0,
    "lung": -850.0,
    "fat": -100.0,
    "fluid": 10.0,
    "skin": 30.0,
    "soft": 40.0,
    "muscle": 50.0,
    "spleen": 50.0,
    "liver": 60.0,
    "kidney": 150.0,
    "contrast": 250.0,
    "marrow": 250.0,
    "calcification": 600.0,
    "cortex": 1300.0,
}
OUTSIDE_FOV_HU = -1024.0
REGIONS = ("chest", "abdomen")  # what the shipped model was trained on
ALL_REGIONS = ("chest", "abdomen", "head", "neck", "pelvis")


@dataclass
class _Blob:
    """An ellipse in patient millimetres whose centre and size drift along z."""

    cx: float
    cy: float
    a: float
    b: float
    theta: float
    hu: float
    dx_dz: float = 0.0
    dy_dz: float = 0.0
    z_extent: tuple[float, float] = (-math.inf, math.inf)
    ring_hu: float | None = None  # a wall/cortex of ``ring_mm`` around the blob
    ring_mm: float = 0.0
    texture: float = 0.0  # amplitude (HU) of fine texture inside the blob


@dataclass
class Phantom:
    """One synthetic patient. ``region`` is ``"chest"`` or ``"abdomen"``."""

    seed: int
    region: str = "chest"
    blobs: list[_Blob] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.region not in ALL_REGIONS:
            raise ValueError(f"region must be one of {ALL_REGIONS}, got {self.region!r}")
        rng = np.random.default_rng(self.seed)
        self.body_a = rng.uniform(140, 185)  # half width (mm)
        self.body_b = rng.uniform(95, 130)  # half depth (mm)
        self.body_cy = rng.uniform(-15, 5)
        self.fat_mm = rng.uniform(6, 25)
        self.muscle_mm = rng.uniform(6, 14)
        self.shape_phase = rng.uniform(0, 2 * math.pi, size=3)
        self.shape_amp = rng.uniform(0.0, 0.04, size=3)
        self._texture_seed = int(rng.integers(0, 2**31))
        builders = {"chest": self._build_chest, "abdomen": self._build_abdomen, "head": self._build_head,
                    "neck": self._build_neck, "pelvis": self._build_pelvis}
        builders[self.region](rng)

    # -- anatomy -----------------------------------------------------------------------------
    def _spine(self, rng: np.random.Generator, inner_b: float) -> None:
        vy = self.body_cy + inner_b - rng.uniform(38, 48)
        r = rng.uniform(15, 20)
        self.blobs.append(_Blob(0, vy, r, r * 0.85, 0, TISSUE_HU["marrow"] + rng.uniform(-60, 60),
                                ring_hu=TISSUE_HU["cortex"] + rng.uniform(-300, 200),
                                ring_mm=rng.uniform(1.5, 2.5), texture=90))
        self.blobs.append(_Blob(0, vy + r + 8, 7, 8, 0, 15, ring_hu=TISSUE_HU["cortex"], ring_mm=2.5))
        for side in (-1, 1):  # laminae / transverse processes
            self.blobs.append(_Blob(side * (r + 6), vy + r * 0.8, 12, 4, side * 0.6,
                                    TISSUE_HU["marrow"], ring_hu=1100, ring_mm=1.5, texture=60))

    def _ribs(self, rng: np.random.Generator, a: float, b: float, count: int) -> None:
        for k in range(count):
            ang = math.pi * (0.15 + 0.7 * k / max(count - 1, 1)) + rng.uniform(-0.05, 0.05)
            for side in (-1, 1):
                cx = side * a * math.sin(ang)
                cy = self.body_cy - b * math.cos(ang)
                self.blobs.append(_Blob(cx, cy, rng.uniform(4, 7), rng.uniform(2.5, 4), ang,
                                        TISSUE_HU["marrow"] - 50, ring_hu=1200, ring_mm=1.2,
                                        dy_dz=rng.uniform(-0.3, 0.3), texture=40))

    def _build_chest(self, rng: np.random.Generator) -> None:
        ia = self.body_a - self.fat_mm - self.muscle_mm
        ib = self.body_b - self.fat_mm - self.muscle_mm
        H = TISSUE_HU
        self.blobs.append(_Blob(0, self.body_cy, ia, ib, 0, H["soft"], texture=8))  # mediastinum bed
        lung_a, lung_b = ia * rng.uniform(0.40, 0.46), ib * rng.uniform(0.78, 0.88)
        for side in (-1, 1):
            cx = side * ia * rng.uniform(0.48, 0.54)
            self.blobs.append(_Blob(cx, self.body_cy - 2, lung_a, lung_b, side * rng.uniform(-0.1, 0.2),
                                    H["lung"] + rng.uniform(-40, 30), texture=25))
            for _ in range(int(rng.integers(45, 75))):  # vessels, some cut obliquely
                rr = math.sqrt(rng.uniform(0, 1))
                ang = rng.uniform(0, 2 * math.pi)
                radius = rng.uniform(0.7, 4.5) * (1.3 - rr * 0.7)
                elong = rng.uniform(1.0, 3.0)
                self.blobs.append(_Blob(cx + 0.9 * lung_a * rr * math.cos(ang),
                                        self.body_cy + 0.9 * lung_b * rr * math.sin(ang),
                                        radius * elong, radius, rng.uniform(0, math.pi),
                                        H["soft"] + rng.uniform(-20, 30),
                                        dx_dz=rng.uniform(-0.6, 0.6), dy_dz=rng.uniform(-0.6, 0.6),
                                        z_extent=(rng.uniform(-200, 0), rng.uniform(0, 200))))
            for _ in range(int(rng.integers(4, 9))):  # airways: air lumen, soft wall
                rr = math.sqrt(rng.uniform(0, 0.6))
                ang = rng.uniform(0, 2 * math.pi)
                radius = rng.uniform(1.5, 5)
                self.blobs.append(_Blob(cx + lung_a * rr * math.cos(ang), self.body_cy + lung_b * rr * math.sin(ang),
                                        radius, radius * rng.uniform(0.7, 1.0), rng.uniform(0, math.pi),
                                        H["air"], ring_hu=H["soft"], ring_mm=rng.uniform(0.8, 1.5),
                                        dx_dz=rng.uniform(-0.3, 0.3), dy_dz=rng.uniform(-0.3, 0.3)))
            # a few small nodules / calcified granulomas: small high-contrast details
            for _ in range(int(rng.integers(1, 4))):
                self.blobs.append(_Blob(cx + rng.uniform(-0.6, 0.6) * lung_a, self.body_cy + rng.uniform(-0.6, 0.6) * lung_b,
                                        rng.uniform(1.5, 4), rng.uniform(1.5, 4), 0,
                                        rng.choice([H["soft"], H["calcification"]]),
                                        z_extent=(rng.uniform(-80, 0), rng.uniform(0, 80))))
        # trachea between the lungs
        self.blobs.append(_Blob(rng.uniform(-5, 5), self.body_cy - ib * 0.3, 9, 8, 0, H["air"],
                                ring_hu=H["soft"] + 30, ring_mm=2))
        # heart with contrast-filled chambers, aorta
        hx = rng.uniform(10, 30)
        self.blobs.append(_Blob(hx, self.body_cy - ib * 0.25, ia * 0.30, ib * 0.42, 0.5, H["soft"], texture=10,
                                z_extent=(-120, 40)))
        self.blobs.append(_Blob(hx + 8, self.body_cy - ib * 0.3, ia * 0.13, ib * 0.18, 0.3, H["contrast"] + rng.uniform(-50, 80),
                                z_extent=(-110, 30)))
        ar = rng.uniform(11, 15)
        self.blobs.append(_Blob(-rng.uniform(15, 25), self.body_cy + ib * 0.35, ar, ar, 0,
                                H["contrast"] + rng.uniform(-80, 80), ring_hu=60, ring_mm=1.5))
        self._spine(rng, ib)
        self._ribs(rng, ia + self.muscle_mm * 0.5, ib + self.muscle_mm * 0.5, 6)
        self.blobs.append(_Blob(0, self.body_cy - ib - 2, 14, 5, 0, H["marrow"], ring_hu=1100, ring_mm=1.5, texture=40))

    def _build_abdomen(self, rng: np.random.Generator) -> None:
        ia = self.body_a - self.fat_mm - self.muscle_mm
        ib = self.body_b - self.fat_mm - self.muscle_mm
        H = TISSUE_HU
        self.blobs.append(_Blob(0, self.body_cy, ia, ib, 0, H["fat"] + rng.uniform(-15, 15), texture=12))
        # liver on the patient's right (image left, x < 0 in LPS), spleen on the left
        self.blobs.append(_Blob(-ia * 0.45, self.body_cy - ib * 0.1, ia * 0.50, ib * 0.75, 0.3,
                                H["liver"] + rng.uniform(-10, 15), texture=10, dx_dz=0.1))
        for _ in range(int(rng.integers(4, 10))):  # hepatic vessels, a lesion or two
            self.blobs.append(_Blob(-ia * 0.45 + rng.uniform(-0.3, 0.3) * ia, self.body_cy + rng.uniform(-0.4, 0.4) * ib,
                                    rng.uniform(2, 7), rng.uniform(2, 7), rng.uniform(0, math.pi),
                                    float(rng.choice([H["contrast"] - 80, H["fluid"], 90.0])),
                                    dx_dz=rng.uniform(-0.4, 0.4), dy_dz=rng.uniform(-0.4, 0.4)))
        self.blobs.append(_Blob(ia * 0.6, self.body_cy + ib * 0.25, ia * 0.2, ib * 0.3, -0.5,
                                H["spleen"] + rng.uniform(-10, 10), texture=8))
        for side in (-1, 1):
            kx = side * ia * rng.uniform(0.35, 0.45)
            ky = self.body_cy + ib * 0.45
            self.blobs.append(_Blob(kx, ky, ia * 0.13, ib * 0.22, side * 0.4, H["kidney"] + rng.uniform(-20, 40),
                                    ring_hu=H["fat"], ring_mm=2, z_extent=(-90, 90)))
            self.blobs.append(_Blob(kx - side * 6, ky, ia * 0.05, ib * 0.07, side * 0.4, H["fluid"] + 20,
                                    z_extent=(-60, 60)))
        for _ in range(int(rng.integers(8, 16))):  # bowel loops: wall, fluid/air/contrast content
            bx, by = rng.uniform(-0.1, 0.7) * ia, self.body_cy + rng.uniform(-0.7, 0.2) * ib
            r = rng.uniform(8, 18)
            content = float(rng.choice([H["fluid"], H["air"], H["contrast"] + 100, 30.0]))
            self.blobs.append(_Blob(bx, by, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, math.pi), content,
                                    ring_hu=H["soft"] + 20, ring_mm=rng.uniform(1.5, 3),
                                    dx_dz=rng.uniform(-0.5, 0.5), dy_dz=rng.uniform(-0.5, 0.5)))
        ar = rng.uniform(9, 13)
        self.blobs.append(_Blob(-5, self.body_cy + ib * 0.35 - 25, ar, ar, 0, H["contrast"] - rng.uniform(0, 80)))
        self.blobs.append(_Blob(ia * 0.0 + 22, self.body_cy + ib * 0.35 - 22, ar * 1.2, ar * 0.8, 0, H["contrast"] - 120))
        for _ in range(int(rng.integers(2, 6))):  # small calcifications
            self.blobs.append(_Blob(rng.uniform(-0.6, 0.6) * ia, self.body_cy + rng.uniform(-0.5, 0.5) * ib,
                                    rng.uniform(0.8, 2.0), rng.uniform(0.8, 2.0), 0, H["calcification"] + rng.uniform(-200, 400)))
        self._spine(rng, ib)
        self._ribs(rng, ia + self.muscle_mm * 0.5, ib + self.muscle_mm * 0.5, 2)

    def _build_head(self, rng: np.random.Generator) -> None:
        """Scalp, skull (outer and inner tables with diploe), brain with grey/white matter,
        ventricles, falx, and orbits/sinuses in the lower slices (z < 0)."""
        H = TISSUE_HU
        self.body_a, self.body_b = rng.uniform(66, 78), rng.uniform(85, 100)
        self.body_cy, self.fat_mm, self.muscle_mm = rng.uniform(-10, 0), rng.uniform(2, 4), rng.uniform(1, 2)
        ia, ib = self.body_a - 5, self.body_b - 5
        skull = rng.uniform(5, 8)
        self.blobs.append(_Blob(0, self.body_cy, ia, ib, 0, H["marrow"] + 100, ring_hu=H["cortex"] + 300,
                                ring_mm=1.5, texture=80))  # skull with diploe
        self.blobs.append(_Blob(0, self.body_cy, ia - skull, ib - skull, 0, 1500.0))  # inner table
        brain_a, brain_b = ia - skull - 1.5, ib - skull - 1.5
        self.blobs.append(_Blob(0, self.body_cy, brain_a, brain_b, 0, 38.0, texture=4))  # grey matter
        self.blobs.append(_Blob(0, self.body_cy, brain_a * 0.78, brain_b * 0.8, 0, 27.0, texture=3))  # white
        for side in (-1, 1):  # lateral ventricles
            self.blobs.append(_Blob(side * rng.uniform(6, 10), self.body_cy - rng.uniform(0, 10), rng.uniform(3, 6),
                                    rng.uniform(14, 22), side * 0.15, 8.0, z_extent=(-10, 60)))
            gy = self.body_cy - brain_b + 13
            self.blobs.append(_Blob(side * brain_a * 0.45, gy, 11, 11, 0, 12.0,
                                    ring_hu=50, ring_mm=1.5, z_extent=(-80, -35)))  # globe
            self.blobs.append(_Blob(side * brain_a * 0.45, gy - 8, 4, 2, 0, 90.0, z_extent=(-70, -45)))  # lens
            self.blobs.append(_Blob(side * brain_a * 0.35, self.body_cy - brain_b * 0.55, 12, 14, 0, H["air"],
                                    ring_hu=H["cortex"], ring_mm=1.0, z_extent=(-120, -60)))  # maxillary sinus
        self.blobs.append(_Blob(0, self.body_cy, 0.8, brain_b * 0.85, 0, 60.0, z_extent=(-30, 80)))  # falx
        for _ in range(int(rng.integers(0, 3))):  # calcifications (pineal, plexus)
            self.blobs.append(_Blob(rng.uniform(-8, 8), self.body_cy + rng.uniform(0, 20), 1.2, 1.2, 0,
                                    H["calcification"]))

    def _build_neck(self, rng: np.random.Generator) -> None:
        """Cervical vertebra, trachea, thyroid, carotids and jugulars, muscles, fat planes."""
        H = TISSUE_HU
        self.body_a, self.body_b = rng.uniform(55, 70), rng.uniform(50, 62)
        self.body_cy, self.fat_mm, self.muscle_mm = rng.uniform(-5, 5), rng.uniform(3, 10), rng.uniform(4, 8)
        ia, ib = self.body_a - self.fat_mm - self.muscle_mm, self.body_b - self.fat_mm - self.muscle_mm
        self.blobs.append(_Blob(0, self.body_cy, ia, ib, 0, H["muscle"], texture=8))
        vy = self.body_cy + ib * 0.35
        self.blobs.append(_Blob(0, vy, 9, 8, 0, H["marrow"], ring_hu=H["cortex"], ring_mm=1.5, texture=60))
        self.blobs.append(_Blob(0, vy + 14, 6, 6, 0, 15.0, ring_hu=H["cortex"], ring_mm=2.0))
        ty = self.body_cy - ib * 0.45
        self.blobs.append(_Blob(0, ty, 9, 8, 0, H["air"], ring_hu=H["soft"] + 60, ring_mm=2.0))  # trachea
        for side in (-1, 1):
            self.blobs.append(_Blob(side * 15, ty + 3, 8, 12, side * 0.5, 110.0, z_extent=(-60, 20)))  # thyroid
            self.blobs.append(_Blob(side * 25, ty + 12, 3.5, 3.5, 0, H["contrast"] + rng.uniform(-60, 60)))  # carotid
            self.blobs.append(_Blob(side * 32, ty + 14, 5, 4, 0, H["contrast"] - 100))  # jugular
            self.blobs.append(_Blob(side * ia * 0.55, self.body_cy + ib * 0.1, 8, 20, side * 0.4, H["fat"]))

    def _build_pelvis(self, rng: np.random.Generator) -> None:
        """Iliac bones or femoral heads, sacrum, bladder, rectum, gluteal muscles."""
        H = TISSUE_HU
        ia = self.body_a - self.fat_mm - self.muscle_mm
        ib = self.body_b - self.fat_mm - self.muscle_mm
        self.blobs.append(_Blob(0, self.body_cy, ia, ib, 0, H["muscle"], texture=8))
        self.blobs.append(_Blob(0, self.body_cy - ib * 0.1, ia * 0.55, ib * 0.55, 0, H["fat"] + 10, texture=10))
        self.blobs.append(_Blob(0, self.body_cy - ib * 0.35, rng.uniform(25, 45), rng.uniform(20, 35), 0,
                                H["fluid"], ring_hu=H["soft"], ring_mm=2.0))  # bladder
        self.blobs.append(_Blob(0, self.body_cy + ib * 0.3, 12, 10, 0, float(rng.choice([H["air"], 20.0])),
                                ring_hu=H["soft"] + 10, ring_mm=3.0))  # rectum
        self.blobs.append(_Blob(0, self.body_cy + ib * 0.7, 30, 12, 0, H["marrow"], ring_hu=H["cortex"],
                                ring_mm=2.0, texture=70, z_extent=(0, 200)))  # sacrum
        for side in (-1, 1):
            self.blobs.append(_Blob(side * ia * 0.62, self.body_cy + ib * 0.2, 40, 9, side * 0.9, H["marrow"],
                                    ring_hu=H["cortex"], ring_mm=2.0, texture=70, z_extent=(0, 200)))  # ilium
            self.blobs.append(_Blob(side * ia * 0.6, self.body_cy, 23, 23, 0, H["marrow"] - 50,
                                    ring_hu=H["cortex"], ring_mm=2.5, texture=80, z_extent=(-200, 0)))  # femoral head
            self.blobs.append(_Blob(side * ia * 0.55, self.body_cy + ib * 0.25, 3, 3, 0, H["contrast"] - 50))  # iliac a.

    # -- rendering ---------------------------------------------------------------------------
    def slice_hu(self, z_mm: float, size: int = 512, pixel_spacing: float = 0.78125) -> np.ndarray:
        """Noise-free anatomy at table position ``z_mm`` as (size, size) float32 HU.

        Rows run anterior to posterior, columns patient right to left (DICOM LPS, radiological view);
        the isocentre is at the image centre.
        """
        coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2) * pixel_spacing
        X, Y = np.meshgrid(coords, coords)
        img = np.full((size, size), TISSUE_HU["air"], dtype=np.float32)
        tex_rng = np.random.default_rng((self._texture_seed, int(round(z_mm * 100)) & 0xFFFFFFFF))
        fine = smooth_noise(tex_rng, size, 1.2)
        coarse = smooth_noise(tex_rng, size, 6.0)

        zf = 1.0 + 0.05 * math.sin(z_mm / 60.0 + self.shape_phase[0])
        ang = np.arctan2(Y - self.body_cy, X)
        wobble = 1.0 + sum(a * np.cos((k + 2) * ang + p) for k, (a, p) in enumerate(zip(self.shape_amp, self.shape_phase)))
        r_body = ((X / (self.body_a * zf)) ** 2 + ((Y - self.body_cy) / (self.body_b * zf)) ** 2) ** 0.5 / wobble
        skin = 2.0 / self.body_b
        img[r_body <= 1.0] = TISSUE_HU["skin"]
        img[r_body <= 1.0 - skin] = TISSUE_HU["fat"] + 10 * coarse[r_body <= 1.0 - skin]
        muscle_r = 1.0 - (self.fat_mm) / self.body_b
        m = r_body <= muscle_r
        img[m] = TISSUE_HU["muscle"] + 8 * coarse[m]
        fat_r = 1.0 - (self.fat_mm + self.muscle_mm) / self.body_b
        m = r_body <= fat_r
        img[m] = TISSUE_HU["fat"]

        for blob in self.blobs:
            if not (blob.z_extent[0] <= z_mm <= blob.z_extent[1]):
                continue
            cx = blob.cx * zf + blob.dx_dz * z_mm
            cy = self.body_cy + (blob.cy - self.body_cy) * zf + blob.dy_dz * z_mm
            a, b = blob.a * zf, blob.b * zf
            ct, st = math.cos(blob.theta), math.sin(blob.theta)
            # bounding box in pixels to keep rendering cheap
            rmax = max(a, b) + blob.ring_mm + 1
            c0 = int(max(0, (cx - rmax) / pixel_spacing + (size - 1) / 2))
            c1 = int(min(size, (cx + rmax) / pixel_spacing + (size - 1) / 2 + 2))
            r0 = int(max(0, (cy - rmax) / pixel_spacing + (size - 1) / 2))
            r1 = int(min(size, (cy + rmax) / pixel_spacing + (size - 1) / 2 + 2))
            if c0 >= c1 or r0 >= r1:
                continue
            xs, ys = X[r0:r1, c0:c1] - cx, Y[r0:r1, c0:c1] - cy
            u, v = xs * ct + ys * st, -xs * st + ys * ct
            sub = img[r0:r1, c0:c1]
            if blob.ring_hu is not None and blob.ring_mm > 0:
                outer = (u / (a + blob.ring_mm)) ** 2 + (v / (b + blob.ring_mm)) ** 2 <= 1.0
                sub[outer] = blob.ring_hu
            inner = (u / a) ** 2 + (v / b) ** 2 <= 1.0
            val = np.full(inner.sum(), blob.hu, dtype=np.float32)
            if blob.texture:
                val += blob.texture * fine[r0:r1, c0:c1][inner]
            sub[inner] = val
        self._table(img, X, Y)
        return img

    def _table(self, img: np.ndarray, X: np.ndarray, Y: np.ndarray) -> None:
        top = self.body_cy + self.body_b + 6.0
        curve = top + 0.0008 * X**2
        shell = (Y >= curve) & (Y <= curve + 14) & (np.abs(X) < 210)
        img[shell & (img <= -900)] = 250.0
        foam = (Y >= curve + 2) & (Y <= curve + 12) & (np.abs(X) < 206)
        img[foam] = -920.0


def smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered white noise of shape (size, size)."""
    n = rng.standard_normal((size, size), dtype=np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigma_px)
    return n / max(float(n.std()), 1e-6)


def acquire(hu: np.ndarray, rng: np.random.Generator, psf_sigma_px: float = 0.8,
            noise_hu: float = 10.0, fov_radius_px: float | None = None) -> np.ndarray:
    """What a scanner adds to ideal anatomy: PSF blur, correlated quantum noise of std
    ``noise_hu`` (HU), and ``OUTSIDE_FOV_HU`` outside the reconstruction circle.

    ``hu`` is (H, W) float32 HU; returns a new (H, W) float32 HU array.
    """
    out = cv2.GaussianBlur(hu.astype(np.float32), (0, 0), psf_sigma_px) if psf_sigma_px > 0 else hu.astype(np.float32)
    if noise_hu > 0:
        out = out + noise_hu * smooth_noise(rng, hu.shape[0], 0.6)[: hu.shape[0], : hu.shape[1]]
    if fov_radius_px is not None:
        h, w = hu.shape
        yy, xx = np.ogrid[:h, :w]
        outside = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 > fov_radius_px**2
        out[outside] = OUTSIDE_FOV_HU
    return out.astype(np.float32)
