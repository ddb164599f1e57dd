"""Configs and command lines: the config library, validation, flag parsing and exit codes.

The bottom layer: every other package may import it; it imports none of them.
"""
