"""ECHONET Lite: frame codec, meter class decoding and the request layer."""
