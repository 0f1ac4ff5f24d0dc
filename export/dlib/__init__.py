"""dlib's serialised DNN files read in pure Python and rebuilt as ONNX graphs (no dlib code)."""
