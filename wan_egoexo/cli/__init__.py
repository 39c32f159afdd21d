"""The command line, ``python -m wan_egoexo`` (console script ``wan-egoexo``): the parser and the
``convert-lora`` command (``main``), and the ``translate`` command for one clip, a batch over several
processes, or the demo (``translate``).

May import: any part of the core; nothing imports it but ``__main__``.
"""
