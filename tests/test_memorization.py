import numpy as np

from ambient.data import embedded_faces
from ambient.eval.neighbors import pixel_features, similarity_summary, top_k_similarity


def test_training_image_is_its_own_nearest_neighbour():
    images, _ = embedded_faces()
    feats = pixel_features(images)
    vals, idx = top_k_similarity(feats, feats, k=2)
    assert np.allclose(vals[:, 0].numpy(), 1.0, atol=1e-5)
    assert (idx[:, 0].numpy() == np.arange(100)).all()
    others, _ = top_k_similarity(feats, feats, k=1, exclude_self=True)
    # the embedded faces are distinct people: no other face is a near copy
    assert others.max() < 0.9 and 0.55 < others.mean() < 0.75


def test_similarity_is_invariant_to_brightness_and_contrast():
    images, _ = embedded_faces(5)
    brighter = np.clip(images.astype(int) // 2 + 60, 0, 255).astype(np.uint8)
    vals, idx = top_k_similarity(pixel_features(brighter), pixel_features(images))
    assert (idx[:, 0].numpy() == np.arange(5)).all() and vals.min() > 0.99


def test_summary_shares():
    s = similarity_summary(np.array([0.5, 0.91, 0.96, 0.995]))
    assert s["share_gt_0.90"] == 0.75 and s["share_gt_0.95"] == 0.5 and s["share_gt_0.99"] == 0.25
    assert s["n"] == 4
