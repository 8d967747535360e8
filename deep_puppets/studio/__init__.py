"""The puppet studio (issue 17): edit a trained target's expression, gaze and head pose frame by frame, see the
conditioning render and the generated frame, and export keyframed edits as a clip.

Engine (no web code): :mod:`.results` (the results folder a studio opens), :mod:`.controls` (the named sliders
and how an edit changes the fitted parameters), :mod:`.keyframes` (keyframes interpolated over a clip) and
:mod:`.engine` (:class:`~.engine.StudioEngine`: render, generate, export). The web app builds on the engine only.
"""
