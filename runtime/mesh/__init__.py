"""From a result's 21 views to a vertex-coloured mesh: ``python -m runtime.mesh DIR`` (runtime/mesh/cli.py).

    cameras.py      the orbit's pinhole cameras in the runtime's camera convention
    views.py        reading a result folder (frames + info.json) and the object masks
    carve.py        the visual hull as a signed distance field on a voxel grid (numpy)
    refine.py       optional colour-consistency carving of its surface voxels
    images.py       bilinear sampling
    deps.py         the optional libraries, imported when used
    surface.py      marching cubes (scikit-image), smoothing and decimation (trimesh, fast-simplification)
    colour.py       vertex colours from the most frontal unoccluded views
    reconstruct.py  the stages in order, timed
    preview.py      a turntable image of the mesh (numpy)
    write.py        mesh.glb, mesh.obj, preview.png, mesh.json, published atomically

Importing this package imports numpy only; scipy, scikit-image and trimesh (requirements-mesh.txt) are imported by
the functions that use them. Nothing here imports models/, export/ or MindSpore.
"""
from .cameras import DEFAULT_DISTANCE, DEFAULT_FOV_DEG, Cameras, orbit_cameras
from .reconstruct import DEFAULT_FACES, DEFAULT_RESOLUTION, Reconstruction, reconstruct

__all__ = ["Cameras", "DEFAULT_DISTANCE", "DEFAULT_FACES", "DEFAULT_FOV_DEG", "DEFAULT_RESOLUTION",
           "Reconstruction", "orbit_cameras", "reconstruct"]
