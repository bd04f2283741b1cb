"""The experiments behind the docs' numbers, one package per topic (README.md: the index). Run a script as
a module from the repository root: `python -m experiments.<topic>.<script> ...`."""
