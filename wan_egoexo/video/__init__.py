"""Clips in and out: what a file holds (``probe``: ffprobe without decoding), when each frame is shown
(``timing``), the size a clip is fitted to (``grid_size``) and the fit itself and its undoing (``fit``,
``pixels``), decoding only the frames a fit uses (``decode``, through ``ffmpeg_process``), the one probe of any
clip, file, frame folder or still (``clip_source``), reading a clip fitted to the grid within the free
memory (``clip_reader``, ``host_memory``), whole videos, still images and writing mp4 (``read_write``), and the
sound for the translated span (``audio``).

May import: the top-level modules (errors, atomic_files) only; nothing here knows a model.
"""
