"""Translating clips end to end, the code the CLI, ``translate_file`` and the nodes share: the checks
of every input before any model file is opened (``preflight``), one clip from file to file
(``translation``: fit, encode, sample, decode, write) and the names and listing of a batch of clips
(``batch``).

May import: every other part of the core except ``cli``.
"""
