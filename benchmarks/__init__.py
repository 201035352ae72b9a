"""portnn benchmarks: W1-W5 against PyTorch native (``python -m benchmarks --help``).

Importing this package imports no array library, so run.py can set the thread
counts before numpy and torch load.
"""
