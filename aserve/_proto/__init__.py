"""Python classes for the TF Serving config protos that ``tensorflow-serving-api`` lacks.

The ``*_pb2`` modules (and their ``.pyi`` stubs) are generated from ``protos/`` by the
build (``setup.py``), for wheels and editable installs alike; reinstall after editing a
``.proto`` file.
"""
