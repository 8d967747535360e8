"""3D morphable face models: one type (:class:`MorphableModel`), several providers (loaders/builders).

- :mod:`.facemesh`: MediaPipe FaceMesh topology (852 triangles), landmark groups, canonical face, and the
  embedding of the 478 detector landmarks on other meshes;
- :mod:`.person`: the default person-specific model built from one video's landmarks (+ its HDF5 layout);
- :mod:`.ict`: ICT Face Model Light (npz or FaceXModel folder);
- :mod:`.bfm`: Basel Face Model 2009 (+ Exp_Pca.bin expressions) and 2017/2019;
- :mod:`.registry`: ``load_model(spec)`` dispatching on a config dict.

Heavy submodules are imported lazily by the registry; import them directly when needed.
"""

from .base import N_LANDMARKS, MorphableModel
from .person import build_person_model, load_person_model, save_model
from .registry import load_model

__all__ = ["MorphableModel", "N_LANDMARKS", "build_person_model", "load_model", "load_person_model", "save_model"]
