"""Python classes for the TF Serving config protos that ``tensorflow-serving-api`` lacks.

The ``*_pb2`` modules are generated from ``protos/`` by the build (``setup.py``);
:func:`ensure_generated` also generates them on first import in a source checkout.
"""
