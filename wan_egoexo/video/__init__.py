"""Clips in and out: what a file holds (``probe``: ffprobe without decoding), when each frame is shown
(``timing``), the size a clip is fitted to (``grid_size``) and the fit itself and its undoing (``fit``,
``pixels``), decoding only the frames a fit uses (``decode``, through ``ffmpeg_process``), reading a clip
fitted to the grid (``clip_reader``), whole videos, still images and writing mp4 (``read_write``), and the
sound for the translated span (``audio``).

May import: the top-level modules (errors, atomic_files) only; nothing here knows a model.
"""
