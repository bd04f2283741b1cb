"""The GPU check: the few runs a GPU host gives, and their table. See README.md."""
