"""Real DeepDetect `/chain` bodies, adapted only in service names and image paths (our test services:
`things` detector, `colours` and `palette` classifiers, `ocr` sequence model, `painter` image model;
`IMAGE` is a relative path, `B64` raw base64). Each entry: (id, where it comes from, HTTP method, body,
expected status)."""

from __future__ import annotations

from typing import Any

IMAGE = "images/scene.png"  # relative, resolved against the daemon's working directory
IMAGE2 = "images/scene2.png"
B64 = "<raw base64 of images/scene.png>"  # replaced by the test (the Python client's use_base64=True)

DETECT = {"input": {"keep_orig": True}, "output": {"bbox": True, "confidence_threshold": 0.1}}


def _crop_child(crop: dict[str, Any], child: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"service": "things", "parameters": DETECT, "data": [IMAGE]},
        {"id": "crop", "action": crop},
        {"parent_id": "crop", **child},
    ]


BODIES: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("seed-faces-age", "deepdetect.com/server/docs/chain-api (curl -X PUT -d, no content type)", "PUT", {
        "chain": {"calls": [
            {"parameters": {"input": {"connector": "image", "keep_orig": True}, "mllib": {"gpu": True},
                            "output": {"bbox": True, "confidence_threshold": 0.1}},
             "service": "things", "data": [IMAGE]},
            {"id": "crop", "action": {"type": "crop"}},
            {"parent_id": "crop", "parameters": {"input": {"connector": "image", "keep_orig": True},
                                                 "output": {"confidence_threshold": 0.01, "best": 1}},
             "service": "colours"},
        ]}}, 200),
    ("seed-crop-form", "chain-api page, 'Cropping' (parameters beside type, save_crop)", "PUT",
     {"chain": {"calls": _crop_child({"type": "crop", "padding_ratio": 0.05, "save_crop": True},
                                     {"service": "colours"})}}, 200),
    ("seed-filter-form", "chain-api page, 'Filtering' (classnames)", "PUT", {"chain": {"calls": [
        {"service": "things", "parameters": DETECT, "data": [IMAGE]},
        {"action": {"type": "filter", "classnames": ["car", "dog", "cat"]}},
        {"id": "crop", "action": {"type": "crop"}},
        {"parent_id": "crop", "service": "colours"}]}}, 200),
    ("seed-tree", "chain-api page, 'Chain tree structure' (ids root/leaf_child_1/2/great_child)", "PUT",
     {"chain": {"calls": [
         {"id": "root", "service": "things", "parameters": DETECT, "data": [IMAGE]},
         {"parent_id": "root", "id": "leaf_child_1", "action": {"type": "draw_bbox"}},
         {"parent_id": "root", "id": "leaf_child_2", "action": {"type": "crop"}},
         {"parent_id": "leaf_child_2", "id": "leaf_great_child_2", "service": "colours"}]}}, 200),
    ("ut-torch-detect-classif", "tests/ut-chain.cc chain_torch_detection_classification", "POST", {
        "chain": {"name": "chain", "calls": [
            {"service": "things", "parameters": {"input": {"keep_orig": True},
                                                 "output": {"bbox": True, "confidence_threshold": 0.2}},
             "data": [IMAGE, IMAGE2]},
            {"id": "crop", "action": {"type": "crop", "parameters": {"padding_ratio": 0.05}}},
            {"service": "colours", "parent_id": "crop", "parameters": {"output": {"best": 1}}}]}}, 200),
    ("ut-torch-tree", "tests/ut-chain.cc 'multiple models (tree)'", "POST", {
        "chain": {"name": "chain", "calls": [
            {"service": "things", "parameters": {"input": {"keep_orig": True},
                                                 "output": {"bbox": True, "confidence_threshold": 0.2}},
             "data": [IMAGE]},
            {"id": "crop", "action": {"type": "crop", "parameters": {"padding_ratio": 0.05}}},
            {"service": "colours", "parent_id": "crop", "parameters": {"output": {"best": 1}}},
            {"service": "palette", "parent_id": "crop", "parameters": {"output": {"best": 2}}}]}}, 200),
    ("ut-caffe-ocr", "tests/ut-chain.cc chain_caffe_detection_ocr (ctc, blank_label)", "POST", {
        "chain": {"name": "chain", "calls": [
            {"service": "things", "parameters": {"input": {"keep_orig": True},
                                                 "output": {"bbox": True, "confidence_threshold": 0.2}},
             "data": [IMAGE]},
            {"id": "crop", "action": {"type": "crop", "parameters": {"padding_ratio": 0.2}}},
            {"service": "ocr", "parent_id": "crop",
             "parameters": {"output": {"ctc": True, "blank_label": 0, "confidence_threshold": 0}}}]}}, 200),
    ("ut-caffe-faces", "tests/ut-chain.cc chain_caffe_faces_classification (mllib.net)", "POST", {
        "chain": {"calls": [
            {"parameters": {"input": {"keep_orig": True, "connector": "image"},
                            "output": {"confidence_threshold": 0.5, "bbox": True},
                            "mllib": {"net": {"test_batch_size": 2}}},
             "service": "things", "data": [IMAGE, IMAGE2]},
            {"id": "face_detection_crop", "action": {"parameters": {"padding_ratio": 0.0}, "type": "crop"}},
            {"parent_id": "face_detection_crop",
             "parameters": {"input": {"keep_orig": True, "connector": "image"}, "output": {"best": 1},
                            "mllib": {"net": {"test_batch_size": 2}}},
             "service": "colours"}]}}, 200),
    ("ut-caffe-draw", "tests/ut-chain.cc chain_caffe_detect_draw_bboxes (padding_ratio on draw_bbox)", "POST",
     {"chain": {"calls": [
         {"parameters": {"input": {"keep_orig": True, "connector": "image"},
                         "output": {"confidence_threshold": 0.5, "bbox": True},
                         "mllib": {"net": {"test_batch_size": 2}}},
          "service": "things", "data": [IMAGE]},
         {"id": "face_detection_bbox", "action": {
             "parameters": {"padding_ratio": 0.0, "output_images": True, "write_prob": True},
             "type": "draw_bbox"}}]}}, 200),
    ("ut-trt-gan", "tests/ut-chain.cc chain_trt_detection_gan (extract_layer last → vals)", "POST", {
        "chain": {"name": "chain", "calls": [
            {"service": "things", "parameters": {"input": {"keep_orig": True},
                                                 "output": {"bbox": True, "best_bbox": 1}},
             "data": [IMAGE]},
            {"id": "crop", "action": {"type": "crop", "parameters": {"fixed_width": 36, "fixed_height": 36}}},
            {"service": "colours", "parent_id": "crop",
             "parameters": {"mllib": {"extract_layer": "last"}, "output": {}}}]}}, 200),
    ("ut-trt-recompose", "tests/ut-chain.cc chain_trt_detection_gan 'image recompose'", "POST", {
        "chain": {"name": "chain", "calls": [
            {"service": "things", "parameters": {"input": {"keep_orig": True, "cuda": False},
                                                 "output": {"bbox": True, "best_bbox": 2}},
             "data": [IMAGE]},
            {"id": "crop", "action": {"type": "crop", "parameters": {"fixed_width": 8, "fixed_height": 8}}},
            {"service": "painter", "parent_id": "crop",
             "parameters": {"input": {"cuda": False}, "mllib": {"extract_layer": "last"},
                            "output": {"image": True}}},
            {"id": "recompose", "action": {"type": "recompose",
                                           "parameters": {"save_img": True, "save_path": "."}}}]}}, 200),
    ("client-make-call", "clients/python/dd_client make_call(use_base64=True, index_uris) + post_chain",
     "POST", {"chain": {"calls": [
         {"service": "things", "parameters": {"input": {}, "mllib": {}, "output": {"bbox": True}},
          "data": [B64], "index_uris": ["scene-1"]},
         {"action": {"type": "crop"}},
         {"service": "colours", "parameters": {"input": {}, "mllib": {}, "output": {}}}]}}, 200),
    ("demo-chaindetect", "demo/objdetect/chaindetect.py (draw_bbox vals reshaped to H,W,3)", "POST", {
        "chain": {"calls": [
            {"service": "things", "parameters": {"input": {"keep_orig": True}, "mllib": {"gpu": True},
                                                 "output": {"bbox": True, "confidence_threshold": 0.1}},
             "data": [IMAGE]},
            {"id": "img_bbox", "action": {"type": "draw_bbox",
                                          "parameters": {"output_images": True, "write_prob": True}}}]}},
     200),
    ("issue-691", "jolibrain/deepdetect#691 (no chain wrapper, 'ressource', parent_id \"\")", "PUT", {
        "ressource": "predict", "calls": [
            {"service": "things", "data": [IMAGE],
             "parameters": {"input": {"connector": "image", "keep_orig": True},
                            "output": {"confidence_threshold": 0.1, "bbox": True},
                            "mllib": {"gpu": True, "net": {"test_batch_size": 1}}},
             "parent_id": ""},
            {"id": "face_crop", "action": {"type": "crop"}},
            {"service": "colours", "parameters": {"input": {"connector": "image", "keep_orig": True},
                                                  "output": {"best": 100, "confidence_threshold": 0.001}},
             "parent_id": "face_crop"}]}, 200),
    ("pr-605-ocr-wild", "jolibrain/deepdetect#605 description (ocr_wild; body cut off in the excerpt, "
     "completed from ut-chain's OCR call)", "PUT", {"chain": {"resource": "predict", "calls": [
         {"service": "things", "parameters": {"input": {"keep_orig": True},
                                              "output": {"bbox": True, "confidence_threshold": 0.2}},
          "data": [IMAGE]},
         {"id": "crop", "action": {"type": "crop", "parameters": {"padding_ratio": 0.05}}},
         {"service": "ocr", "parent_id": "crop",
          "parameters": {"output": {"ctc": True, "blank_label": 0}}}]}}, 200),
    ("pr-605-simsearch", "jolibrain/deepdetect#605 ('similarity search from neural embeddings')", "PUT", {
        "chain": {"calls": [
            {"service": "things", "parameters": DETECT, "data": [IMAGE]},
            {"id": "crop", "action": {"type": "crop"}},
            {"service": "colours", "parent_id": "crop",
             "parameters": {"mllib": {"extract_layer": "pooled"},
                            "output": {"search": True, "search_nn": 10}}}]}}, 400),
    ("issue-689", "jolibrain/deepdetect#689 (detection → crop → classification; boxes past the border)",
     "PUT", {"chain": {"calls": [
         {"service": "things", "data": [IMAGE],
          "parameters": {"input": {"keep_orig": True}, "output": {"bbox": True, "confidence_threshold": 0.1},
                         "mllib": {"gpu": True}}},
         {"id": "crop", "action": {"type": "crop", "parameters": {"padding_ratio": 0.5}}},
         {"service": "colours", "parent_id": "crop", "parameters": {"output": {"best": 1}}}]}}, 200),
]  # fmt: skip
