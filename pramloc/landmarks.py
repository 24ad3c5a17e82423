"""From a triangulated model to a landmark map: remove outliers, segment the 3D points
into landmarks (spatial clusters), keep one descriptor per point, drop redundant points.

All point arrays are indexed by a contiguous point index (not COLMAP's point3D_id).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pycolmap

from . import logger


@dataclass
class Tracks:
    """Triangulated points with their observations (all arrays share the point index).

    xyz (P, 3) float64 world coordinates; color (P, 3) uint8; obs_point (O,) point index,
    obs_image (O,) image index (into ``names``), obs_kp (O,) keypoint index in that image.
    """

    names: list[str]
    xyz: np.ndarray
    color: np.ndarray
    obs_point: np.ndarray
    obs_image: np.ndarray
    obs_kp: np.ndarray

    @property
    def track_length(self) -> np.ndarray:
        return np.bincount(self.obs_point, minlength=len(self.xyz))

    def subset(self, keep: np.ndarray) -> "Tracks":
        """Keep points where ``keep`` (P,) bool is set, renumbering them."""
        new_id = np.full(len(self.xyz), -1, np.int64)
        new_id[keep] = np.arange(int(keep.sum()))
        o = keep[self.obs_point]
        return Tracks(self.names, self.xyz[keep], self.color[keep], new_id[self.obs_point[o]],
                      self.obs_image[o], self.obs_kp[o])


def tracks_from_reconstruction(rec: pycolmap.Reconstruction, names: list[str]) -> Tracks:
    """Points and observations of a pycolmap model; image index = position in ``names``."""
    index = {n: i for i, n in enumerate(names)}
    image_index = {im_id: index[im.name] for im_id, im in rec.images.items() if im.name in index}
    xyz, color, op, oi, ok = [], [], [], [], []
    # Sorted by id: pycolmap's iteration order differs between a model in memory and the
    # same model read back from disk, and k-means must not depend on it.
    for p, (pid, point) in enumerate(sorted(rec.points3D.items())):
        xyz.append(point.xyz)
        color.append(point.color)
        for el in point.track.elements:
            op.append(p)
            oi.append(image_index[el.image_id])
            ok.append(el.point2D_idx)
    return Tracks(list(names), np.asarray(xyz, np.float64).reshape(-1, 3), np.asarray(color, np.uint8).reshape(-1, 3),
                  np.asarray(op, np.int64), np.asarray(oi, np.int64), np.asarray(ok, np.int64))


def remove_outliers(xyz: np.ndarray, nb_neighbors: int, std_ratio: float) -> np.ndarray:
    """Statistical outlier removal (open3d). Returns (P,) bool mask of inliers."""
    import open3d as o3d

    keep = np.zeros(len(xyz), bool)
    if len(xyz) <= nb_neighbors:
        keep[:] = True
        return keep
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    _, idx = pcd.remove_statistical_outlier(nb_neighbors=nb_neighbors, std_ratio=std_ratio)
    keep[np.asarray(idx, np.int64)] = True
    return keep


def segment(xyz: np.ndarray, num_landmarks: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Spatial k-means (OpenCV) of (P, 3) points into landmarks.

    Returns labels (P,) in [0, L) and centres (L, 3), renumbered so that landmark ids are
    ordered by their centre along the principal axis (stable, human-readable ids).
    """
    k = int(min(num_landmarks, len(xyz)))
    if k <= 1:
        return np.zeros(len(xyz), np.int64), xyz.mean(0, keepdims=True)
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)
    data = (xyz - xyz.mean(0)).astype(np.float32)
    _, labels, centers = cv2.kmeans(data, k, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
    labels = labels.reshape(-1).astype(np.int64)
    centers = centers.astype(np.float64) + xyz.mean(0)
    # Drop empty clusters and order by the first principal axis.
    used = np.unique(labels)
    axis = np.linalg.svd(data - data.mean(0), full_matrices=False)[2][0]
    order = used[np.argsort(centers[used] @ axis, kind="stable")]
    remap = np.full(k, -1, np.int64)
    remap[order] = np.arange(len(order))
    return remap[labels], centers[order]


def representative_descriptors(tracks: Tracks, descriptors: list[np.ndarray]) -> np.ndarray:
    """One descriptor per point: the observation closest to the others (the medoid).

    ``descriptors[i]`` is the (N_i, D) descriptor array of image ``i``. Returns (P, D).
    """
    D = descriptors[0].shape[1]
    out = np.zeros((len(tracks.xyz), D), np.float32)
    order = np.argsort(tracks.obs_point, kind="stable")
    pts = tracks.obs_point[order]
    obs_desc = np.stack([descriptors[i][k] for i, k in zip(tracks.obs_image[order], tracks.obs_kp[order])]) \
        if len(order) else np.zeros((0, D), np.float32)
    bounds = np.searchsorted(pts, np.arange(len(tracks.xyz) + 1))
    for p in range(len(tracks.xyz)):
        d = obs_desc[bounds[p]:bounds[p + 1]]
        if len(d) <= 2:
            out[p] = d[0]
        else:
            # argmin_i sum_j |d_i - d_j|^2 = argmax_i (d_i . sum_j d_j - n |d_i|^2 / 2): any descriptor
            # (for unit-norm ones the largest summed similarity)
            out[p] = d[np.argmax((d @ d.T).sum(1) - 0.5 * len(d) * (d * d).sum(1))]
    return out


def sparsify(tracks: Tracks, points_per_image: int | None, min_track_length: int) -> np.ndarray:
    """Drop redundant points: keep points seen by at least ``min_track_length`` images and,
    for every image, its ``points_per_image`` best-observed points (longest tracks), so that
    every map image keeps enough points to be registered against (None: every point seen
    often enough). Returns (P,) bool."""
    tl = tracks.track_length
    eligible = tl >= min_track_length
    if points_per_image is None:
        return eligible
    keep = np.zeros(len(tl), bool)
    # Sort observations by image, then by decreasing track length.
    o = np.lexsort((-tl[tracks.obs_point], tracks.obs_image))
    img, pt = tracks.obs_image[o], tracks.obs_point[o]
    ok = eligible[pt]
    img, pt = img[ok], pt[ok]
    start = np.searchsorted(img, np.arange(len(tracks.names) + 1))
    for i in range(len(tracks.names)):
        keep[pt[start[i]:start[i] + points_per_image]] = True
    return keep


def visible_points(camera, pose, xyz: np.ndarray, point_landmark: np.ndarray, cell: int = 8
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The 3D points (P, 3) seen by a camera with ``pose`` (world-to-camera): projected into
    the image and not hidden behind a nearer point of the same ``cell`` x ``cell`` px cell
    (depth more than 10% larger). Returns their pixels (M, 2) (features' convention) and
    landmark ids (M,)."""
    from .geometry import project

    uv, z = project(camera, pose, np.asarray(xyz, np.float64))
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 1] >= 0) & (uv[:, 0] < camera.width) & (uv[:, 1] < camera.height)
    uv, z, lm = uv[inside], z[inside], np.asarray(point_landmark)[inside]
    if not len(uv):
        return uv, lm
    cells = (uv[:, 1] // cell).astype(np.int64) * (int(camera.width) // cell + 1) + (uv[:, 0] // cell).astype(np.int64)
    zmin = np.full(cells.max() + 1, np.inf)
    np.minimum.at(zmin, cells, z)
    visible = z <= zmin[cells] * 1.1
    return uv[visible], lm[visible]


def _labels_near(uv: np.ndarray, lm: np.ndarray, keypoints: np.ndarray, radius: float) -> np.ndarray:
    """(N,) labels of keypoints (N, 2): ``l + 1`` of the nearest point (M, 2) with landmark
    ``l`` (M,) if within ``radius`` px, else 0."""
    from scipy.spatial import cKDTree

    labels = np.zeros(len(keypoints), np.int64)
    if len(uv) and len(keypoints):
        dist, j = cKDTree(uv).query(np.asarray(keypoints, np.float64), distance_upper_bound=radius)
        ok = np.isfinite(dist)
        labels[ok] = lm[j[ok]] + 1
    return labels


def projected_labels(camera, pose, xyz: np.ndarray, point_landmark: np.ndarray, keypoints: np.ndarray,
                     num_landmarks: int, radius: float = 3.0, cell: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Landmark labels of an image's keypoints (N, 2) (pixels) from the :func:`visible_points`
    of its pose: a keypoint within ``radius`` px of a visible point takes its landmark.
    Returns labels (N,) int64 (0 = background, l + 1 = landmark l) and the number of
    visible points of each landmark (num_landmarks,) int64."""
    uv, lm = visible_points(camera, pose, xyz, point_landmark, cell)
    return _labels_near(uv, lm, keypoints, radius), np.bincount(lm, minlength=num_landmarks)


# Recognizer supervision (TrainingLabels, training_labels) lives in pramloc.recognition.supervision.


@dataclass
class LandmarkSegmentation:
    """Result of :func:`build`: clustered tracks (all triangulated inlier points), their
    landmark ids, the kept (sparsified) subset and its representative descriptors."""

    tracks: Tracks                 # inlier points, before sparsification
    landmark: np.ndarray           # (P,) landmark id of each inlier point
    centers: np.ndarray            # (L, 3)
    keep: np.ndarray               # (P,) bool: points stored in the map
    descriptors: np.ndarray        # (P_kept, D) one descriptor per kept point
    stats: dict


def nearest_landmark(xyz: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(P, 3) points -> (P,) id of the nearest landmark centre (L, 3)."""
    from scipy.spatial import cKDTree

    return cKDTree(centers).query(xyz)[1].astype(np.int64)


def build(rec: pycolmap.Reconstruction, names: list[str], descriptors: list[np.ndarray], conf: dict) -> LandmarkSegmentation:
    """Outliers out; cluster the best-observed points of every image
    (``landmark_points_per_image``: an even coverage of the scene) into landmarks and label
    every inlier point with its nearest landmark centre; store the points seen by at least
    ``min_track_length`` images (at most ``points_per_image`` per image, None: all).

    Storing every well-observed point, not only the best-observed of each map image, is
    what lets a query from a viewpoint the map images did not cover find matches."""
    tracks = tracks_from_reconstruction(rec, names)
    n0 = len(tracks.xyz)
    inl = remove_outliers(tracks.xyz, conf["outlier_neighbors"], conf["outlier_std_ratio"])
    tracks = tracks.subset(inl)
    core = sparsify(tracks, conf["landmark_points_per_image"], conf["min_track_length"])
    num = max(1, min(conf["num_landmarks"], int(core.sum()) // conf.get("min_points_per_landmark", 30)))
    _, centers = segment(tracks.xyz[core], num, conf.get("seed", 0))
    landmark = nearest_landmark(tracks.xyz, centers)
    keep = sparsify(tracks, conf["points_per_image"], conf["min_track_length"])
    desc = representative_descriptors(tracks.subset(keep), descriptors)
    per = np.bincount(landmark[keep], minlength=len(centers))
    stats = {
        "triangulated_points": n0,
        "outliers_removed": int(n0 - inl.sum()),
        "landmarks": int(len(centers)),
        "kept_points": int(keep.sum()),
        "points_per_landmark_min": int(per.min()) if keep.any() else 0,
        "points_per_landmark_max": int(per.max()) if keep.any() else 0,
    }
    logger.info("Landmarks: %d points -> %d inliers -> %d kept -> %d landmarks.",
                n0, len(tracks.xyz), keep.sum(), len(centers))
    return LandmarkSegmentation(tracks, landmark, centers, keep, desc, stats)
