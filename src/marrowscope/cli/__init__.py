"""Thin command-line commands: each chains library functions and holds no logic."""
