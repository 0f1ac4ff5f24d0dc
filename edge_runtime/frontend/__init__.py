"""Feature front-ends, shared by training and the device so both compute the same inputs.

`audio` (decode, resample, log-mel), `video` (clip decode), `face` (detection, 5-point
alignment: where a face crop is made), `face_quality`, `vad`, and `features` (the model
input definitions: face tensor, voice windows).
"""
