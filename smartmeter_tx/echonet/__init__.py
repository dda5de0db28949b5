"""ECHONET Lite, pure: the frame codec and the meter class decoding."""
