"""Clips in and out: what a file holds (``probe``: ffprobe without decoding), which files and
containers ffmpeg may open (``containers``: the named file only, as a ``file:`` URL with protocol and
format whitelists), when each frame is shown (``timing``), the size a clip is fitted to
(``grid_size``) and the fit itself and its undoing (``fit``, ``pixels``), decoding only the frames a
fit uses (``decode``, through ``ffmpeg_process``), the one probe of any clip, file, frame folder or
still (``clip_source``), reading a clip fitted to the grid within the free memory (``clip_reader``,
``host_memory``), whole videos and still images (``read_write``), encoding mp4 from streamed frames
(``write``), restoring the output to the source's size and rate a frame at a time (``restore``), and
the sound for the translated span (``audio``).

May import: the top-level modules (errors, atomic_files, option_ranges) only; nothing here knows a model.
"""
