"""The OpenGL side of the conditioning renderer: the shaders, a headless ModernGL context (EGL) and
:class:`Renderer`, which draws the colour and correspondence images of one frame on the GPU (or Mesa's llvmpipe)
and the gaze image with :mod:`deep_puppets.render.gaze` (conventions: :mod:`deep_puppets.render`)."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ..mesh import vertex_face_incidence, vertex_normals_keep_dtype
from ..subdivision import loop_subdivision
from ..texture.lighting import sh_basis
from .conditioning_file import STREAMS, Frame
from .gaze import MEDIAPIPE_EYES, EyeLayout, draw_gaze
from .geometry import NEARER_Z, camera_positions, correspondence_colours, depth_map
from .shading import quadratic_basis_matrix

DEFAULT_ALBEDO = 0.75  # grey where a model has no albedo

_VERTEX_SHADER = """
#version 330
uniform vec4 box;       // crop x0, y0, x1, y1 in frame pixels
uniform vec2 zmap;      // z_ndc = zmap.x * z + zmap.y (nearer -> smaller)
uniform vec3 light[9];  // lighting in the basis 1, x, y, z, xy, yz, xz, x^2 - y^2, 3z^2 - 1 of the normal
in vec3 in_pos;         // screen space: x right, y down (frame pixels), z depth
in vec3 in_normal;      // normal (any length), camera frame: x right, y down, z away from the camera
in vec3 in_albedo;
in vec3 in_corr;
out vec3 v_colour;
out vec3 v_corr;
void main() {
    // y grows downwards and maps to increasing window rows, so glReadPixels' first row is the top row
    vec2 xy = (in_pos.xy - box.xy) / (box.zw - box.xy) * 2.0 - 1.0;
    gl_Position = vec4(xy, zmap.x * in_pos.z + zmap.y, 1.0);
    float len = length(in_normal);
    vec3 n = len > 0.0 ? in_normal / len : vec3(0.0, 0.0, -1.0);
    float x = n.x, y = n.y, z = n.z;
    vec3 shade = light[0] + light[1] * x + light[2] * y + light[3] * z + light[4] * (x * y)
               + light[5] * (y * z) + light[6] * (x * z) + light[7] * (x * x - y * y)
               + light[8] * (3.0 * z * z - 1.0);
    v_colour = clamp(in_albedo * shade, 0.0, 1.0);
    v_corr = in_corr;
}
"""

_FRAGMENT_SHADER = """
#version 330
in vec3 v_colour;
in vec3 v_corr;
layout(location = 0) out vec4 f_colour;
layout(location = 1) out vec4 f_corr;
void main() {
    f_colour = vec4(v_colour, 1.0);
    f_corr = vec4(v_corr, 1.0);
}
"""


class RenderError(RuntimeError):
    """The OpenGL context could not be created or used."""


LLVMPIPE_THREADS = 2  # the render rules' threads; measured on 2 cores: 484–530 frames/s with 2, 379–468 with 1


def create_context(llvmpipe_threads: int | None = LLVMPIPE_THREADS):
    """A headless ModernGL context on EGL, or :class:`RenderError` saying what to install.

    ``llvmpipe_threads`` sets Mesa's ``LP_NUM_THREADS`` (rasteriser threads of the CPU driver) unless the
    environment already does; Mesa reads it once per process, at the first context. GPUs ignore it.
    """
    import moderngl  # (inside: keeps ModernGL out of importing this module)

    if llvmpipe_threads is not None:
        os.environ.setdefault("LP_NUM_THREADS", str(int(llvmpipe_threads)))
    try:
        return moderngl.create_standalone_context(backend="egl")
    except Exception as e:  # glcontext raises plain Exceptions
        raise RenderError(
            f"cannot create a headless OpenGL context with EGL ({type(e).__name__}: {e}); "
            "install the system libraries libegl1 and libgl1 (Mesa; llvmpipe renders on the CPU)"
        ) from e


class Renderer:
    """Renders :class:`~.conditioning_file.Frame` s of one topology; create once per job, call :meth:`render` per frame.

    ``triangles`` (F, 3) counter-clockwise from the front; ``mean`` (N, 3) the model's mean shape (for the
    correspondence colours); ``albedo`` (N, 3) in [0, 1] (default grey, see :meth:`set_albedo`);
    ``subdivisions`` Loop levels applied to every frame (1 suits MediaPipe-sized meshes at 256², 2 at 512²
    and more; 0 for dense meshes); ``samples`` MSAA samples (0: off, deterministic). Several renderers may
    live in one process: each makes its own context current while it draws.
    """

    def __init__(
        self,
        triangles: np.ndarray,
        mean: np.ndarray,
        *,
        size: tuple[int, int] = (256, 256),
        subdivisions: int = 1,
        nearer_z: str = "smaller",
        albedo: np.ndarray | None = None,
        sh_basis: Callable = sh_basis,
        samples: int = 0,
        eye_layout: EyeLayout = MEDIAPIPE_EYES,
        iris_colour=(255, 0, 0),
        eye_colour=(255, 255, 255),
    ):
        if nearer_z not in NEARER_Z:
            raise ValueError(f"nearer_z must be one of {NEARER_Z}, got {nearer_z!r}")
        self.size = (int(size[0]), int(size[1]))
        self.nearer_z = nearer_z
        self.subdivisions = int(subdivisions)
        self.samples = int(samples)
        self.eye_layout = eye_layout
        self.iris_colour, self.eye_colour = iris_colour, eye_colour
        mean = np.asarray(mean, dtype=np.float64)
        self.n_vertices = len(mean)
        self.base_triangles = np.asarray(triangles, dtype=np.int64)
        S, faces = loop_subdivision(self.base_triangles, self.n_vertices, self.subdivisions)
        self.S = S.astype(np.float32)
        self.faces = faces.astype(np.int32)
        self._incidence = vertex_face_incidence(self.base_triangles, self.n_vertices, np.float32)
        self._sh_matrix = quadratic_basis_matrix(sh_basis)
        self._corr = self.S @ correspondence_colours(mean).astype(np.float32)
        self._ctx = None
        self._setup_gl()
        self.set_albedo(albedo)

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model, **kw) -> "Renderer":
        """A renderer for a :class:`~deep_puppets.models.base.MorphableModel` (its mean albedo if any)."""
        kw.setdefault("albedo", model.albedo)
        return cls(model.triangles, model.mean, **kw)

    def _setup_gl(self) -> None:
        import moderngl  # (inside: keeps ModernGL out of importing this module)

        self._ctx = ctx = create_context()
        self.gl_renderer = ctx.info.get("GL_RENDERER", "unknown")
        n = self.S.shape[0]
        self._dynamic = ctx.buffer(reserve=n * 6 * 4, dynamic=True)  # position, normal (float32)
        self._static = ctx.buffer(reserve=n * 6 * 4)  # albedo, correspondence
        self._index = ctx.buffer(self.faces.tobytes())
        self._prog = ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self._vao = ctx.vertex_array(
            self._prog,
            [(self._dynamic, "3f 3f", "in_pos", "in_normal"), (self._static, "3f 3f", "in_albedo", "in_corr")],
            index_buffer=self._index,
            index_element_size=4,
        )
        w, h = self.size
        colour = [ctx.renderbuffer((w, h), 4, samples=self.samples) for _ in range(2)]
        depth = ctx.depth_renderbuffer((w, h), samples=self.samples)
        self._fbo = ctx.framebuffer(colour, depth)
        if self.samples:
            self._resolve = ctx.framebuffer([ctx.renderbuffer((w, h), 4) for _ in range(2)])
        else:
            self._resolve = self._fbo
        self._fbo.use()
        ctx.enable(moderngl.DEPTH_TEST)
        ctx.disable(moderngl.CULL_FACE)
        ctx.depth_func = "<"

    def set_albedo(self, albedo: np.ndarray | None) -> None:
        """Per-vertex albedo (N, 3) in [0, 1] of the base mesh (``None``: uniform grey)."""
        if albedo is None:
            albedo = np.full((self.n_vertices, 3), DEFAULT_ALBEDO)
        albedo = np.asarray(albedo, dtype=np.float32)
        if albedo.shape != (self.n_vertices, 3):
            raise ValueError(f"albedo must be ({self.n_vertices}, 3), got {albedo.shape}")
        static = np.concatenate([self.S @ albedo, self._corr], axis=1).astype(np.float32)
        with self._ctx:  # make this renderer's context current (several may live in one process)
            self._static.write(static.tobytes())

    # -- per frame -------------------------------------------------------------------------------------
    def surface(self, vertices: np.ndarray) -> np.ndarray:
        """The refined (subdivided) screen-space vertices (M, 3) float32 of base ``vertices`` (N, 3)."""
        return self.S @ np.asarray(vertices, dtype=np.float32)

    def normals(self, vertices: np.ndarray) -> np.ndarray:
        """Unit camera-frame vertex normals (N, 3) of base screen-space ``vertices`` (outward: front n_z < 0)."""
        camera = camera_positions(vertices, self.nearer_z)
        return vertex_normals_keep_dtype(camera, self.base_triangles, self._incidence)

    def geometry(self, vertices: np.ndarray) -> np.ndarray:
        """Refined positions and normals (M, 6) float32: ``S @ [V | normals(V)]`` (normals not unit length)."""
        vertices = np.asarray(vertices, dtype=np.float32)
        return self.S @ np.concatenate([vertices, self.normals(vertices).astype(np.float32)], axis=1)

    def lighting(self, sh: np.ndarray | None) -> np.ndarray:
        """Shader lighting (9, 3) for SH coefficients (9, 3) of ``sh_basis`` (``None``: shading 1)."""
        if sh is None:
            out = np.zeros((9, 3))
            out[0] = 1.0
            return out
        sh = np.asarray(sh, dtype=np.float64)
        if sh.shape == (9,):
            sh = np.repeat(sh[:, None], 3, axis=1)
        if sh.shape != (9, 3):
            raise ValueError(f"sh must be (9, 3) or (9,), got {sh.shape}")
        return self._sh_matrix @ sh

    def render(
        self, vertices: np.ndarray, box, sh: np.ndarray | None = None, eye_points: np.ndarray | None = None
    ) -> Frame:
        """Render one frame.

        ``vertices`` (N, 3) screen space (see module doc), ``box`` crop (x0, y0, x1, y1) in frame pixels,
        ``sh`` (9, 3) lighting, ``eye_points`` (P, ≥2) landmark points in frame pixels for the gaze image
        (e.g. ``model.landmark_points(vertices)``). Non-finite vertices give black images, ``valid=False``.
        """
        w, h = self.size
        box = np.asarray(box, dtype=np.float64)
        vertices = np.asarray(vertices, dtype=np.float32)
        if vertices.shape != (self.n_vertices, 3):
            raise ValueError(f"vertices must be ({self.n_vertices}, 3), got {vertices.shape}")
        out = Frame(*(np.zeros((h, w, 3), np.uint8) for _ in STREAMS), valid=bool(np.isfinite(vertices).all()))
        if not out.valid or not (np.isfinite(box).all() and box[2] > box[0] and box[3] > box[1]):
            out.valid = False
            return out
        geometry = self.geometry(vertices)
        with self._ctx:  # make this renderer's context current (several may live in one process)
            self._draw(geometry, box, self.lighting(sh), out)
        draw_gaze(eye_points, box, self.size, self.eye_layout, self.iris_colour, self.eye_colour, out=out.gaze)
        return out

    def _draw(self, geometry: np.ndarray, box: np.ndarray, lighting: np.ndarray, out: Frame) -> None:
        """Upload the frame's vertices and uniforms, draw both attachments, read them back into ``out``."""
        self._dynamic.write(geometry.tobytes())
        self._prog["box"].value = tuple(box)
        self._prog["zmap"].value = depth_map(geometry[:, 2], self.nearer_z)
        self._prog["light"].write(lighting.astype(np.float32).tobytes())
        self._fbo.use()
        self._fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        self._vao.render()
        if self.samples:
            self._ctx.copy_framebuffer(self._resolve, self._fbo)
        self._resolve.read_into(out.colour, components=3, attachment=0)
        self._resolve.read_into(out.correspondence, components=3, attachment=1)

    # -- lifetime --------------------------------------------------------------------------------------
    def settings(self) -> dict:
        """What determines the images besides the inputs (recorded in output files)."""
        return {
            "size": list(self.size),
            "subdivisions": self.subdivisions,
            "nearer_z": self.nearer_z,
            "samples": self.samples,
            "vertices": int(self.S.shape[0]),
            "triangles": int(len(self.faces)),
            "eye_layout": self.eye_layout.name,
            "iris_colour": list(self.iris_colour),
            "eye_colour": None if self.eye_colour is None else list(self.eye_colour),
        }

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.release()
            self._ctx = None

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
