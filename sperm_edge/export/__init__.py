"""Export: checkpoint -> bundle (FP32 ONNX, INT8 Q/DQ ONNX, TensorRT engines, retained checkpoint).

One module per format, each with one entry function, chained by files:
`onnx_export.export_onnx` -> `int8.quantize_int8` -> `tensorrt_build.build_engine`. Checks live
apart from conversion (`parity`, `qdq_check`, `gate`), and `pipeline.export_bundle` runs them all
into a folder written by `bundle_writer.BundleWriter`. Nothing heavy is imported here.
"""

_LAZY = {"export_bundle", "ExportOptions", "ExportResult"}


def __getattr__(name: str):
    """`from sperm_edge.export import export_bundle` without importing torch until it is used."""
    if name in _LAZY:
        from sperm_edge.export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
