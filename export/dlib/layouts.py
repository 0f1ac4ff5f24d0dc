"""The layouts of the two dlib networks edgepin ports, written out from their templates.

dlib's face ResNet (`dlib_face_recognition_resnet_model_v1.dat`, dlib's
dnn_face_recognition_ex.cpp / tools/python face_recognition.cpp):

    residual<block,N>       = add_prev1<block<N,1,tag1<SUBNET>>>
    residual_down<block,N>  = add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,2,tag1<SUBNET>>>>>>
    block<N,stride>         = affine<con<N,3,3,1,1,relu<affine<con<N,3,3,stride,stride,SUBNET>>>>>
    ares / ares_down        = relu<residual / residual_down>
    levels (input side first): 3 x ares<32>; ares_down<64> + 3 x ares<64>;
        ares_down<128> + 2 x ares<128>; ares_down<256> + 2 x ares<256>; ares_down<256>
    net = loss_metric<fc_no_bias<128, avg_pool_everything<levels<
              max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>

dlib's MMOD face detector (`mmod_human_face_detector.dat`, dnn_mmod_face_detection_ex.cpp):

    downsampler = 3 x relu<affine<con<N,5,5,2,2>>> with N = 16, 32, 32
    rcon5       = relu<affine<con<45,5,5,1,1>>>
    net = loss_mmod<con<1,9,9,1,1, rcon5<rcon5<rcon5<downsampler<
              input_rgb_image_pyramid<pyramid_down<6>>>>>>>>
"""

from __future__ import annotations

from export.dlib.reader import Layout

_BLOCK = ("con", "affine", "relu", "con", "affine")
_ARES = ("tag1", *_BLOCK, "add_prev1", "relu")
_ARES_DOWN = ("tag1", *_BLOCK, "tag2", "skip1", "avg_pool", "add_prev2", "relu")


def _levels() -> tuple[str, ...]:
    out: list[str] = []
    out += _ARES * 3  # level 4: 32
    out += _ARES_DOWN + _ARES * 3  # level 3: 64
    out += _ARES_DOWN + _ARES * 2  # level 2: 128
    out += _ARES_DOWN + _ARES * 2  # level 1: 256
    out += _ARES_DOWN  # level 0: 256
    return tuple(out)


FACE_RESNET = Layout(
    "dlib face ResNet v1",
    ("input", "con", "affine", "relu", "max_pool", *_levels(), "avg_pool", "fc"),
)

_RCON = ("con", "affine", "relu")
MMOD_DETECTOR = Layout("dlib MMOD face detector", ("input", *_RCON * 3, *_RCON * 3, "con"))
