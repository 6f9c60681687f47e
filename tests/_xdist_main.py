"""Stands in for the ``__main__`` file of a pytest-xdist worker (see tests/conftest.py).

Processes spawned by a worker (papermill's process pool) run this file as their
``__mp_main__``; it must do nothing.
"""
