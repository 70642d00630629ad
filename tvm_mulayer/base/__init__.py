"""The base layer: the data every other layer passes around — the Plan, layers, processors,
slice precisions and calibrations, the model zoo, profile records — and the one error type.
Nothing here imports from the layers above (runtime, compiler, planning, API)."""

__version__ = "0.1.0"
