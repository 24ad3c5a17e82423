"""Cameras and poses.

Pose convention everywhere: **world-to-camera** (COLMAP's ``cam_from_world``),
``x_cam = R @ x_world + t``; quaternions are ``(qw, qx, qy, qz)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from .errors import PramlocError

# The camera-model table. COLMAP camera models we accept for cameras (a subset of
# :func:`colmap_camera_models`), with their number of parameters.
CAMERA_MODELS: dict[str, int] = {
    "SIMPLE_PINHOLE": 3,
    "PINHOLE": 4,
    "SIMPLE_RADIAL": 4,
    "RADIAL": 5,
    "OPENCV": 8,
}
MAX_IMAGE_SIDE = 1 << 20  # pixels; larger sizes are parse errors, not images


@functools.cache
def colmap_camera_models() -> dict[str, tuple[int, int]]:
    """COLMAP camera models known to the installed pycolmap: name -> (id, number of params)."""
    import pycolmap

    out = {}
    for name, model_id in pycolmap.CameraModelId.__members__.items():
        if int(model_id) < 0:
            continue
        try:
            out[name] = (int(model_id), len(pycolmap.Camera.create_from_model_name(1, name, 1.0, 2, 2).params))
        except Exception:  # a model pycolmap lists but cannot create: not accepted here
            continue
    return out


@dataclass
class Camera:
    """A COLMAP camera: ``model`` name, image ``width``/``height`` in pixels, ``params``."""

    model: str
    width: int
    height: int
    params: np.ndarray = field(repr=False)

    def __post_init__(self):
        self.params = np.asarray(self.params, dtype=np.float64).reshape(-1)
        if self.model not in CAMERA_MODELS:
            raise PramlocError(f"unsupported camera model {self.model!r} (supported: {', '.join(CAMERA_MODELS)})")
        n = CAMERA_MODELS[self.model]
        if self.params.size != n:
            raise PramlocError(f"camera model {self.model} needs {n} parameters, got {self.params.size}")
        if not np.all(np.isfinite(self.params)):
            raise PramlocError(f"camera {self.model} has non-finite parameters")
        if not (0 < self.width <= MAX_IMAGE_SIDE and 0 < self.height <= MAX_IMAGE_SIDE):
            raise PramlocError(f"camera {self.model} has invalid size {self.width}x{self.height}")

    @classmethod
    def from_string(cls, text: str) -> "Camera":
        """Parse ``"MODEL W H p1 p2 ..."`` (hloc's query-list format, without the name)."""
        parts = text.split()
        if len(parts) < 4:
            raise PramlocError(f"camera string {text[:200]!r} must be 'MODEL W H params...'")
        if not all(p.isascii() and "_" not in p for p in parts[1:]):
            raise PramlocError(f"camera string {text[:200]!r} has a non-numeric value")
        try:
            return cls(parts[0], int(parts[1]), int(parts[2]), np.array([float(p) for p in parts[3:]]))
        except ValueError as err:
            raise PramlocError(f"camera string {text[:200]!r} has a non-numeric value: {str(err)[:100]}") from None

    @classmethod
    def from_pycolmap(cls, cam) -> "Camera":
        return cls(cam.model.name, int(cam.width), int(cam.height), np.array(cam.params))

    def to_pycolmap(self):
        import pycolmap

        return pycolmap.Camera(model=self.model, width=self.width, height=self.height, params=self.params)

    def scaled(self, sx: float, sy: float | None = None) -> "Camera":
        """The same camera for an image resized by ``sx`` (and ``sy``).

        COLMAP's principal point has its origin at the image corner, so it scales directly.
        """
        sy = sx if sy is None else sy
        p = self.params.copy()
        if self.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            p[0] *= (sx + sy) / 2
            p[1] *= sx
            p[2] *= sy
        else:  # PINHOLE, OPENCV: fx fy cx cy ...
            p[0] *= sx
            p[1] *= sy
            p[2] *= sx
            p[3] *= sy
        return Camera(self.model, round(self.width * sx), round(self.height * sy), p)

    def K(self) -> np.ndarray:
        """3x3 intrinsic matrix (distortion ignored)."""
        p = self.params
        if self.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            f, cx, cy = p[0], p[1], p[2]
            fx = fy = f
        else:
            fx, fy, cx, cy = p[:4]
        return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])

    def to_string(self) -> str:
        return " ".join([self.model, str(self.width), str(self.height)] + [f"{v:.10g}" for v in self.params])


@dataclass
class Pose:
    """A rigid transform, world-to-camera: ``qvec`` (qw, qx, qy, qz) and ``tvec`` (3,)."""

    qvec: np.ndarray
    tvec: np.ndarray

    def __post_init__(self):
        self.qvec = np.asarray(self.qvec, dtype=np.float64).reshape(4)
        self.tvec = np.asarray(self.tvec, dtype=np.float64).reshape(3)
        if not (np.all(np.isfinite(self.qvec)) and np.all(np.isfinite(self.tvec))):
            raise PramlocError("pose has NaN or infinite values")
        q = self.qvec
        if np.abs(q).max() > 1e150:  # the norm would overflow
            q = q / np.abs(q).max()
        n = np.linalg.norm(q)
        if n < 1e-8:
            raise PramlocError("pose quaternion is zero")
        self.qvec = q / n

    @property
    def R(self) -> np.ndarray:
        """(3, 3) rotation world-to-camera."""
        w, x, y, z = self.qvec
        return Rotation.from_quat([x, y, z, w]).as_matrix()

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre in world coordinates, ``-R^T t``."""
        return -self.R.T @ self.tvec

    @classmethod
    def from_Rt(cls, R: np.ndarray, t: np.ndarray) -> "Pose":
        R = np.asarray(R, dtype=np.float64)
        if R.shape != (3, 3) or not np.all(np.isfinite(R)):
            raise PramlocError("rotation has NaN or infinite values")
        try:
            x, y, z, w = Rotation.from_matrix(R).as_quat()
        except ValueError:  # scipy: determinant <= 0
            raise PramlocError("rotation matrix has a non-positive determinant") from None
        q = np.array([w, x, y, z])
        if q[0] < 0:
            q = -q
        return cls(q, t)

    @classmethod
    def from_cam_to_world(cls, T: np.ndarray) -> "Pose":
        """From a 4x4 (or 3x4) camera-to-world matrix."""
        T = np.asarray(T, dtype=np.float64)
        R_c2w, c = T[:3, :3], T[:3, 3]
        if not np.all(np.isfinite(T[:3, :4])):
            raise PramlocError("pose has NaN or infinite values")
        with np.errstate(over="ignore", invalid="ignore"):
            not_rotation = not (np.abs(R_c2w @ R_c2w.T - np.eye(3)).max() <= 0.05 and np.linalg.det(R_c2w) > 0)
        if not_rotation:
            raise PramlocError("pose rotation is not a rotation matrix")
        # Orthonormalise (dataset poses are often slightly off SO(3)).
        u, _, vt = np.linalg.svd(R_c2w)
        R_c2w = u @ vt
        R = R_c2w.T
        return cls.from_Rt(R, -R @ c)

    @classmethod
    def from_pycolmap(cls, rigid) -> "Pose":
        """From a ``pycolmap.Rigid3d`` (its quaternion, normalised here: a model file may
        hold any quaternion, and its matrix is a rotation only for unit ones)."""
        x, y, z, w = np.asarray(rigid.rotation.quat, dtype=np.float64)
        q = np.array([w, x, y, z])
        return cls(-q if w < 0 else q, np.asarray(rigid.translation, dtype=np.float64))

    def to_pycolmap(self):
        import pycolmap

        w, x, y, z = self.qvec
        return pycolmap.Rigid3d(pycolmap.Rotation3d(np.array([x, y, z, w])), self.tvec)

    def matrix(self) -> np.ndarray:
        """(3, 4) ``[R | t]``."""
        return np.concatenate([self.R, self.tvec[:, None]], 1)

    def transform(self, xyz: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> camera points (N, 3)."""
        return xyz @ self.R.T + self.tvec


def project(camera: Camera, pose: Pose, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points (N, 3) with a pinhole model (distortion ignored).

    Returns pixel coordinates (N, 2) in the keypoint convention of the features files
    (hloc/OpenCV: the centre of the top-left pixel is (0, 0), i.e. COLMAP's minus 0.5)
    and depth (N,).
    """
    pc = pose.transform(xyz)
    z = pc[:, 2]
    uv = pc[:, :2] / np.where(np.abs(z) < 1e-9, 1e-9, z)[:, None]
    K = camera.K()
    uv = uv * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]]) - 0.5
    return uv, z
