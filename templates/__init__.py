"""Every word a person reads: Jinja2 messages and TOML labels, one folder per language.

A package only so that a wheel carries these files and `importlib.resources` finds them.
"""
