"""Tiny random models of the real architectures, saved in the real file layouts (tests and --demo)."""
