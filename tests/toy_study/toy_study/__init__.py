"""A toy iclscope study: does the model answer "is N even?" (tests/test_toy_study.py).

:mod:`.plugin` registers it (light: read while the DAG is built); :mod:`.run` builds its task,
analyses the readouts and draws its figure.
"""
