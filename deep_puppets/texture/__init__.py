"""Per-vertex albedo and spherical-harmonics lighting of a tracked face, estimated from the first frames.

The image model is Lambertian with distant lighting described by 9 real spherical-harmonics (SH)
coefficients per colour channel (Ramamoorthi & Hanrahan 2001)::

    colour(vertex i, frame t) = albedo[i] * (sh_basis(normal[t, i]) @ sh)       # (3,) per vertex

:func:`~.lighting.shade` is exactly this formula; the renderer reproduces it to draw conditioning images.

Conventions (shared with the fitter and the renderer; the constants in :mod:`.visibility` and :mod:`.lighting`
are the single source):

* **Camera** (:data:`~.visibility.CAMERA_AXES`): OpenCV axes, x right, y down, z forward into the scene
  (:data:`~.visibility.CAMERA_FORWARD`). The project's fitter is weak-perspective (:mod:`deep_puppets.camera`):
  its screen-space vertices ``(u, v, d) = scale · F · R · X + t`` (pixels, smaller ``d`` nearer) *are* camera
  coordinates of an orthographic camera in these axes, and their first two columns are the projections —
  the default ``perspective=False`` of the visibility functions. With ``perspective=True`` the camera sits at
  the origin, a point in front of it has z > 0 and projects to ``u = fx x / z + cx``, ``v = fy y / z + cy``.
  These axes are right-handed, so a model → camera transform must be a proper rotation (det +1) times a
  positive scale plus a translation: a model with y up and z towards the viewer needs
  ``F = diag(1, -1, -1)`` folded in (as ``camera.FLIP`` does).
* **Image coordinates** (:data:`~.visibility.PIXEL_CENTER`): x = column, y = row, in pixels of the full frame,
  with the centre of pixel ``(row r, col c)`` at ``(c + 0.5, r + 0.5)`` — MediaPipe's ``normalised × width`` convention
  used by the ``landmarks`` layout.
* **Triangles and normals**: triangles are counter-clockwise seen from outside (``MorphableModel``
  convention), so ``(v1 - v0) × (v2 - v0)`` points outward in any right-handed frame. A surface point faces the
  camera when its normal points towards the camera: ``n_z < 0`` (orthographic) or ``dot(n, -v) > 0``
  (perspective). In image coordinates (y down) a front-facing triangle has a *negative* signed area
  ``(x1 - x0)(y2 - y0) - (x2 - x0)(y1 - y0)`` (it looks counter-clockwise on screen).
* **SH** (:data:`~.lighting.SH_ORDER_DOC`): 9 real SH in the order ``l=0; l=1: y, z, x; l=2: xy, yz, 3z²-1, xz,
  x²-y²`` evaluated at the unit normal in *camera coordinates* (the light is fixed relative to the camera while
  the head moves). :func:`~.lighting.sh_basis` folds in the irradiance factors ``Â_l = π, 2π/3, π/4`` so that
  ``sh_basis(n) @ L`` is the irradiance ``E(n) = ∫ L(ω) max(n·ω, 0) dω`` of the environment radiance whose SH
  coefficients are ``L``; the albedo absorbs Lambert's 1/π.
* **Scale normalisation** (gauge): albedo × lighting has one free scale per colour channel. Estimates are
  normalised so that the DC coefficient of every channel is :data:`~.lighting.SH_DC_UNIT`, i.e. the irradiance
  averaged over all normal directions is 1 in each channel: the albedo carries the overall brightness and colour
  (of skin × light), ``sh[1:]`` the relative directional variation (which may be coloured).

Frames are RGB (``video.iter_frames``); colours are floats in [0, 1].

Modules (import them directly; this package imports nothing):

* :mod:`.lighting` — the SH lighting model: constants, basis, directional lights, :func:`~.lighting.shade`;
* :mod:`.visibility` — the camera and image conventions, a numpy z-buffer rasteriser, facing and visibility;
* :mod:`.albedo` — colour sampling, the albedo + lighting estimate, UV texture baking;
* :mod:`.texture_file` — the ``texture`` HDF5 layout (and the albedo/SH datasets a track may carry).

Vertex normals and the mesh Laplacian are in :mod:`deep_puppets.mesh`.
"""
