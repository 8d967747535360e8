"""One function per workflow job, one module per stage of the data flow: read the job's inputs, call the library,
write its outputs.

Each job is named after its Snakemake rule and takes keyword arguments only; the scripts in ``workflow_scripts/``
are one call into it, and tests can call it without Snakemake. Every job logs to the logger ``deep_puppets.jobs``.

- :mod:`.model`: the morphable model a video is fitted with, and its per-frame vertices on screen (shared);
- :mod:`.demo`: ``demo_clip``;
- :mod:`.ingest`: ``probe``;
- :mod:`.landmarks`: ``landmarks``, ``landmarks_summary``;
- :mod:`.fit`: ``person_model``, ``fit_identity``, ``fit_segment``, ``track``;
- :mod:`.texture`: ``texture``;
- :mod:`.diagnostics`: ``diagnostics``;
- :mod:`.transfer`: ``transfer``, ``expression_fidelity``, ``output_fidelity``;
- :mod:`.render`: ``render_track``, ``render_pair``;
- :mod:`.gan`: ``gan_flow``, ``gan_train``;
- :mod:`.synthesize`: ``gan_synthesize``;
- :mod:`.evaluate`: ``evaluate``;
- :mod:`.report`: ``report_page``, ``video_pages`` (the rules ``overlay_page``, ``evaluation_pages``,
  ``reenactment_pages``);
- :mod:`.export`: ``export_face``, ``export_arkit``, ``export_meshes``.
"""
