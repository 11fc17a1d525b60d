"""What decoding and encoding cost on the event loop, per byte, to decide where they run.

The service runs a codec step inline when its estimate is under ``--codec_offload_us``
(default :data:`DEFAULT_OFFLOAD_US`), and in a codec thread otherwise
(:meth:`aserve.service.Service.transcode`): a thread hop costs ~54 µs round trip, so only
work well above that is worth moving. The rates are the upper end of
``python -m loadtests.codec_costs`` on a 2-core project machine (measured per byte, at
~4 KB and ~400 KB of tensor data, 2026-12-02):

    REST :predict body -> arrays (orjson, then numpy)      0.0025-0.0031 µs/B   used 0.004
    arrays -> REST JSON (TF Serving's float rendering)     0.086-0.106          used 0.1
    gRPC request -> arrays (parse, typed *_val fields)     0.0081-0.0086        used 0.01
    arrays -> gRPC answer (typed fields, serialize)        0.0001-0.0011        used 0.0015
    gzip body, per compressed byte                         0.0033-0.0058        used 0.006
    SignatureDefMap -> protobuf JSON (metadata)            (pure Python)        used 0.2

The Open Inference Protocol's (V2) rates are estimates, not yet measured that way: its JSON
answers are written by orjson straight from the arrays (no per-value Python), and its binary
form is a copy of the array's bytes.
"""

from typing import Final

DEFAULT_OFFLOAD_US: Final = 200.0  # the default of --codec_offload_us

JSON_DECODE_US_PER_BYTE: Final = 0.004
JSON_ENCODE_US_PER_BYTE: Final = 0.1
PROTO_DECODE_US_PER_BYTE: Final = 0.01
PROTO_ENCODE_US_PER_BYTE: Final = 0.0015
GUNZIP_US_PER_BYTE: Final = 0.006
PROTO_JSON_US_PER_BYTE: Final = 0.2
V2_JSON_ENCODE_US_PER_BYTE: Final = 0.01
V2_BINARY_US_PER_BYTE: Final = 0.0005
