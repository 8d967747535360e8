"""The puppet studio: edit a trained target's expression, gaze and head pose live in the browser (issue 17)."""
