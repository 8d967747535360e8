"""Conditioning images of a fitted face: colour, correspondence and eye gaze, rendered headless with OpenGL.

One :class:`~.gl.Renderer` holds a ModernGL context (EGL backend: Mesa llvmpipe on a CPU, the GPU where there
is one) for the whole job. The mesh topology, its Loop-subdivision operator and the static per-vertex
attributes are uploaded once; each frame costs the vertex normals of the base mesh, one sparse product
``S @ [vertices | normals]`` (refinement), one buffer write, one draw into two colour attachments (MRT) and
two read-backs into uint8 arrays. The gaze image is rasterised on the CPU with OpenCV (four small polygons).

Conventions
-----------
* **Screen space** (input): vertices ``(N, 3)`` in pixels of the *video frame*: ``x`` right, ``y`` down,
  ``z`` a depth in the same units whose sign is given by ``nearer_z`` (``"smaller"``, the default: smaller z
  is nearer the camera, as MediaPipe's landmarks and :func:`deep_puppets.camera.project`'s ``d``;
  ``"larger"``: larger z is nearer). The camera is orthographic in these coordinates (the fitter's weak
  perspective is already applied), so ``camera.project(model.shape(p, q), cam)`` is a valid input.
* **Pixels**: pixel ``(col, row)`` of the frame covers ``[col, col + 1) × [row, row + 1)``; its centre is
  at ``(col + 0.5, row + 0.5)``.
* **Crop box** ``(x0, y0, x1, y1)`` in frame pixels maps onto the whole output image: output pixel
  ``(u, v)`` of a ``W × H`` image covers ``x0 + [u, u + 1) (x1 - x0) / W`` (same for ``y``). The full frame
  is ``(0, 0, width, height)`` (:func:`deep_puppets.framing.frame_rectangle`). A box whose aspect differs from
  the output's stretches the face; use square boxes for square outputs.
* **Normals** (and the SH lighting) are in camera coordinates as :mod:`deep_puppets.texture` defines them
  (OpenCV: ``x`` right, ``y`` down, ``z`` away from the camera), i.e. ``(x, y, z)`` of the screen-space
  vertices when smaller z is nearer and ``(x, y, -z)`` otherwise. Triangles are counter-clockwise seen from
  the front (:class:`~deep_puppets.models.base.MorphableModel`), so normals point out of the face and a
  front-facing normal has ``n_z < 0``.
* **Images**: ``uint8 (H, W, 3)`` RGB, row 0 at the top, black background, no gamma (linear values).

The three images
----------------
1. ``colour``: ``clip(albedo × (sh_basis(n) @ sh), 0, 1)`` evaluated per vertex of the refined mesh (in the
   vertex shader) and interpolated over its triangles, the model of :func:`deep_puppets.texture.lighting.shade`.
   The normals are the base mesh's area-weighted vertex normals carried to the refined vertices by ``S``
   (renormalised), i.e. smooth normal interpolation over the base triangles. Any real order-2
   spherical-harmonics basis works (its constants, order and signs are read off the ``sh_basis`` function
   once, see :func:`~.shading.quadratic_basis_matrix`); the default is
   :func:`deep_puppets.texture.lighting.sh_basis` (Ramamoorthi–Hanrahan irradiance constants), so the images
   match :func:`deep_puppets.texture.lighting.shade`.
   ``sh=None`` gives shading 1 (albedo only).
2. ``correspondence``: each surface point coloured by its position on the model's mean shape,
   ``(mean - min) / (max - min)`` per axis → RGB, a fixed attribute: the same point of the face has the same
   colour in every frame and for every actor.
3. ``gaze``: on black, the eye openings (closed eyelid contours) in ``eye_colour`` and the irises (ellipses
   through the 4 rim points around the iris centre, clipped to the eye opening) in ``iris_colour``; drawn in
   2D from landmark points (:class:`~.gaze.EyeLayout`, MediaPipe's 478-point layout by default), without
   occlusion by the face itself.

Modules (import them directly; this package imports nothing)
-------------------------------------------------------------
* :mod:`.shading` — the shader's lighting basis: any order-2 SH basis as 9 quadratic monomials of the normal;
* :mod:`.geometry` — screen-space geometry: camera frame, depth range, crop-box pixels, correspondence colours;
* :mod:`.gaze` — the gaze image, rasterised on the CPU from eye landmarks;
* :mod:`.gl` — the OpenGL side: shaders, the headless context and :class:`~.gl.Renderer`;
* :mod:`.conditioning_file` — the ``conditioning`` HDF5 layout: its ``STREAMS``, a frame's images
  (:class:`~.conditioning_file.Frame`), the deflate encoders, the streaming writer, readers and mp4 previews;
* :mod:`.sequence` — rendering a whole sequence, frame by frame or streamed into a conditioning file.
"""
