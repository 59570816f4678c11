"""Classification and detection decoding, NMS, thresholds and Deepomatic's selection rules."""

from __future__ import annotations

import numpy as np
import pytest

from streamd.networks.postprocessing import PostProcessingError, classify, detect, select, to_deepomatic
from streamd.networks.preprocessing import BoxTransform
from streamd.networks.recognition import Label, RecognitionVersionCreate, SpecOutput

LABELS = (Label(id=7, name="cat"), Label(id=9, name="dog"), Label(id=11, name="bird"))
# A 100x50 frame squashed to a 10x10 network input.
SQUASH = BoxTransform(0.1, 0.2, 0.0, 0.0, 10, 10, 100, 50)


def test_classification_sorts_by_score_and_keeps_each_labels_threshold() -> None:
    hypotheses = classify(np.array([0.2, 0.7, 0.1]), LABELS, [0.5, 0.6, 0.05])
    assert [(h.label_name, h.score, h.threshold, h.passes) for h in hypotheses] == [
        ("dog", pytest.approx(0.7), 0.6, True),
        ("cat", pytest.approx(0.2), 0.5, False),
        ("bird", pytest.approx(0.1), 0.05, True),
    ]


def test_classification_refuses_a_tensor_of_the_wrong_size() -> None:
    with pytest.raises(PostProcessingError, match="has 4 values for one image but the spec has 3 labels"):
        classify(np.zeros(4), LABELS, [0.5] * 3)


def test_select_predicted_first_then_discarded_within_max_predictions() -> None:
    hypotheses = classify(np.array([0.9, 0.8, 0.3]), LABELS, [0.5, 0.5, 0.5])
    three = select(hypotheses, show_discarded=True, max_predictions=3)
    assert ([h.label_id for h in three.predicted], [h.label_id for h in three.discarded]) == ([7, 9], [11])
    hidden = select(hypotheses, show_discarded=False, max_predictions=3)
    assert (len(hidden.predicted), len(hidden.discarded)) == (2, 0)
    capped = select(hypotheses, show_discarded=True, max_predictions=1)
    assert ([h.label_id for h in capped.predicted], capped.discarded) == ([7], ())


def test_detection_maps_boxes_applies_nms_per_class_and_drops_unknown_classes() -> None:
    boxes = np.array(
        [
            [0.1, 0.1, 0.5, 0.5],  # cat 0.9
            [0.12, 0.12, 0.52, 0.52],  # cat 0.8: overlaps the first (IoU ≈ 0.82) → suppressed
            [0.1, 0.1, 0.5, 0.5],  # dog 0.7: same place, other class → kept
            [0.6, 0.6, 0.9, 0.9],  # class 42 is not in the spec → dropped
            [0.0, 0.0, 0.0, 0.0],  # score 0 padding → dropped
        ]
    )
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.0])
    classes = np.array([7, 7, 9, 42, 7], dtype=np.float32)
    hypotheses = detect(
        boxes,
        scores,
        classes,
        LABELS,
        [0.5, 0.75, 0.5],
        nms_threshold=0.5,
        discard_threshold=0.0,
        transform=SQUASH,
    )
    assert [(h.label_name, h.score, h.region_id) for h in hypotheses] == [
        ("cat", pytest.approx(0.9), 1),
        ("dog", pytest.approx(0.7), 2),
    ]
    np.testing.assert_allclose(hypotheses[0].box, (10.0, 5.0, 50.0, 25.0))  # xmin, ymin, xmax, ymax pixels
    assert hypotheses[1].passes is False  # 0.7 < dog's 0.75


def test_detection_discard_threshold_and_tensor_shape_checks() -> None:
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]])
    kept = detect(
        boxes,
        np.array([0.9, 0.2]),
        np.array([7, 9]),
        LABELS,
        [0.5] * 3,
        nms_threshold=0.5,
        discard_threshold=0.3,
        transform=SQUASH,
    )
    assert [h.label_id for h in kept] == [7]
    with pytest.raises(PostProcessingError, match="detection tensors disagree"):
        detect(
            boxes,
            np.array([0.9]),
            np.array([7]),
            LABELS,
            [0.5] * 3,
            nms_threshold=0.5,
            discard_threshold=0.0,
            transform=SQUASH,
        )


def test_deepomatic_format_normalizes_rois_to_the_image_as_sent() -> None:
    hypotheses = detect(
        np.array([[0.1, 0.1, 0.5, 0.5]]),
        np.array([0.9]),
        np.array([7]),
        LABELS,
        [0.5] * 3,
        nms_threshold=0.5,
        discard_threshold=0.0,
        transform=SQUASH,
    )
    output = to_deepomatic(select(hypotheses, False, 10), 200, 100, offset_x=20, offset_y=10)
    assert output == {
        "labels": {
            "predicted": [
                {
                    "label_id": 7,
                    "label_name": "cat",
                    "score": pytest.approx(0.9),
                    "threshold": 0.5,
                    "roi": {"region_id": 1, "bbox": {"xmin": 0.15, "ymin": 0.15, "xmax": 0.35, "ymax": 0.35}},
                }
            ],
            "discarded": [],
        }
    }


def test_versions_must_match_their_specs_outputs() -> None:
    outputs = (
        SpecOutput.model_validate(
            {"labels": {"roi": "BBOX", "labels": [label.model_dump() for label in LABELS]}}
        ),
    )
    good = RecognitionVersionCreate.model_validate(
        {
            "spec_id": 1,
            "network_id": 1,
            "post_processings": [
                {
                    "detection": {
                        "thresholds": [0.5] * 3,
                        "direct_output": {"boxes_tensor": "b", "scores_tensor": "s", "classes_tensor": "c"},
                    }
                }
            ],
        }
    )
    good.check_against(outputs)
    wrong_count = RecognitionVersionCreate.model_validate(
        {
            "spec_id": 1,
            "network_id": 1,
            "post_processings": [{"classification": {"output_tensor": "prob", "thresholds": [0.5] * 2}}],
        }
    )
    with pytest.raises(ValueError, match="has 2 threshold"):
        wrong_count.check_against(outputs)
