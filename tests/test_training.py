import pickle
import signal

import pytest
import torch
from conftest import TINY_NET, TINY_NET_ARGS, run_cli

from ambient.checkpoints import TrainConfig, list_checkpoints, load_checkpoint, model_from_checkpoint
from ambient.training import train


def _cfg(dataset, **kw):
    base = dict(
        dataset=str(dataset),
        corruption={"kind": "dust", "p": 0.5, "delta": 0.1, "sigma_n": 0.0, "seed": 0},
        network=TINY_NET,
        steps=6,
        batch_size=8,
        warmup_steps=2,
        checkpoint_every=2,
        log_every=1,
    )
    return TrainConfig(**{**base, **kw})


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_is_deterministic_and_seed_dependent(tiny_dataset, tmp_path):
    train(_cfg(tiny_dataset), tmp_path / "a", progress=False)
    train(_cfg(tiny_dataset), tmp_path / "b", progress=False)
    train(_cfg(tiny_dataset, seed=1), tmp_path / "c", progress=False)
    a, b, c = (load_checkpoint(tmp_path / d / "model.pt") for d in "abc")
    assert _states_equal(a["ema"], b["ema"])
    assert not _states_equal(a["ema"], c["ema"])
    log = (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 6 and '"loss"' in log[0]


def test_kill_and_resume_is_bitwise_identical(tiny_dataset, tmp_path):
    args = [
        "train",
        "--dataset",
        tiny_dataset,
        "--corruption",
        "dust-p0.50",
        "--steps",
        8,
        "--batch-size",
        8,
        "--warmup-steps",
        2,
        "--checkpoint-every",
        2,
        "--log-every",
        1,
        "--threads",
        1,
        "--device",
        "cpu",
        "--quiet",
        *TINY_NET_ARGS,
    ]
    one_go = run_cli([*args, "--run-dir", tmp_path / "one"])
    assert one_go.returncode == 0, one_go.stderr

    killed = run_cli([*args, "--run-dir", tmp_path / "two"], env={"AMBIENT_KILL_AT_STEP": "4"})
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in list_checkpoints(tmp_path / "two")] == ["checkpoint-0000002.pt", "checkpoint-0000004.pt"]
    assert not (tmp_path / "two" / "model.pt").exists()

    resumed = run_cli([*args, "--run-dir", tmp_path / "two"])
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(tmp_path / "one" / "model.pt"), load_checkpoint(tmp_path / "two" / "model.pt")
    assert _states_equal(a["model"], b["model"]) and _states_equal(a["ema"], b["ema"])
    assert (tmp_path / "one" / "train_log.jsonl").read_text().count("\n") == 8
    assert (tmp_path / "two" / "train_log.jsonl").read_text().count("\n") == 8
    sa, sb = (load_checkpoint(tmp_path / d / "checkpoint-0000008.pt")["optimizer"]["state"] for d in ("one", "two"))
    assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)


def test_truncated_checkpoint_gives_a_clear_error_and_keeps_the_previous(tiny_dataset, tmp_path):
    train(_cfg(tiny_dataset, steps=4), tmp_path, progress=False)
    latest, previous = tmp_path / "checkpoint-0000004.pt", tmp_path / "checkpoint-0000002.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.raises(ValueError, match="checkpoint-0000004.pt.*truncated"):
        train(_cfg(tiny_dataset, steps=6), tmp_path, progress=False)
    assert previous.exists()
    load_checkpoint(previous)  # still intact
    latest.unlink()  # as the message says: delete it to resume from the previous one
    train(_cfg(tiny_dataset, steps=6), tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "model.pt")["step"] == 6


class _Evil:
    def __reduce__(self):
        return (print, ("this pickle runs code",))


def test_checkpoints_load_weights_only_and_code_is_refused(tiny_dataset, tmp_path):
    train(_cfg(tiny_dataset, steps=2), tmp_path, progress=False)
    state = torch.load(tmp_path / "model.pt", weights_only=True)  # plain torch, no allow-listing needed
    model, cfg, info = model_from_checkpoint(state)
    assert model.masked and cfg.steps == 2 and info["resolution"] == 8
    evil = tmp_path / "evil.pt"
    torch.save({"format": "ambient-checkpoint/1", "payload": _Evil()}, evil)
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(evil)
    evil.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(evil)


def test_resume_with_other_settings_is_refused_naming_the_key(tiny_dataset, tmp_path):
    train(_cfg(tiny_dataset, steps=2), tmp_path, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(_cfg(tiny_dataset, steps=4, lr=0.5), tmp_path, progress=False)


def test_cli_end_to_end_and_errors(tiny_dataset, tmp_path):
    r = run_cli(
        [
            "train",
            "--dataset",
            tiny_dataset,
            "--corruption",
            "clean",
            "--steps",
            3,
            "--batch-size",
            4,
            "--run-dir",
            tmp_path / "run",
            "--out",
            tmp_path / "model.pt",
            "--quiet",
            *TINY_NET_ARGS,
        ]
    )
    assert r.returncode == 0, r.stderr
    r = run_cli(
        [
            "sample",
            "--checkpoint",
            tmp_path / "model.pt",
            "--num",
            6,
            "--steps",
            3,
            "--out",
            tmp_path / "s.zip",
            "--quiet",
        ]
    )
    assert r.returncode == 0, r.stderr
    r = run_cli(
        [
            "neighbors",
            "--samples",
            tmp_path / "s.zip",
            "--train",
            tiny_dataset,
            "--out",
            tmp_path / "nn.json",
            "--quiet",
        ]
    )
    assert r.returncode == 0, r.stderr
    import json

    sim = json.loads((tmp_path / "nn.json").read_text())
    assert sim["extractor"] == "pixel" and sim["n"] == 6 and 0 < sim["sim_mean"] <= 1
    assert (tmp_path / "nn.csv").read_text().count("\n") == 7  # header + one row per sample
    r = run_cli(["train", "--dataset", tmp_path / "nope.zip", "--run-dir", tmp_path / "x"])
    assert r.returncode == 2 and "nope.zip" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["train", "--dataset", tiny_dataset, "--corruption", "dust-p1.50", "--run-dir", tmp_path / "x"])
    assert r.returncode == 2 and "p=1.5" in r.stderr


def _batches(cfg, step, splits):
    """batch_at for `step`, computed whole and in `splits` slices (as DDP ranks would), concatenated."""
    from ambient.training import batch_at, step_setup

    images = torch.rand(12, 1, 16, 16) * 2 - 1
    observations = cfg.corruption_spec.apply(images)
    setup = step_setup(cfg, len(images), torch.device("cpu"))
    sampler = setup.sampler
    whole = batch_at(cfg, sampler, step, range(cfg.batch_size), observations)
    size = cfg.batch_size // splits
    parts = [batch_at(cfg, sampler, step, range(r * size, (r + 1) * size), observations) for r in range(splits)]
    split = tuple(torch.cat([p[k] for p in parts]) for k in range(3))
    return whole, split, sampler.indices(step), observations


@pytest.mark.parametrize("kind", ["dust", "box"])
def test_further_corruption_is_drawn_per_step_or_once_per_image(tiny_dataset, kind):
    corruption = {"kind": kind, "p": 0.3, "delta": 0.3 if kind == "dust" else 0.0, "sigma_n": 0.0, "seed": 0}
    step_cfg = _cfg(tiny_dataset, corruption=corruption, further_draw="step")
    image_cfg = _cfg(tiny_dataset, corruption=corruption, further_draw="image")
    (x, a, at), split, idx, (_, a_all, at_all) = _batches(step_cfg, 3, splits=2)
    # per step: A~ lies inside A, does not depend on how the batch is split, is redrawn each step
    assert torch.equal(a, a_all[idx]) and torch.all(at <= a)
    assert all(torch.equal(u, v) for u, v in zip((x, a, at), split))
    assert not torch.equal(at, at_all[idx])
    (_, _, at_next), _, idx_next, _ = _batches(step_cfg, 4, splits=1)
    same = [(i, j) for i in range(len(idx)) for j in range(len(idx_next)) if idx[i] == idx_next[j]]
    assert same and any(not torch.equal(at[i], at_next[j]) for i, j in same)
    if kind == "box":  # the second box never overlaps the first, so it always hides more pixels
        assert torch.all((1 - at).flatten(1).sum(1) > (1 - a).flatten(1).sum(1))
    # once per image: exactly the per-image A~ of the official code
    (_, _, at_fixed), _, idx_fixed, (_, _, at_all) = _batches(image_cfg, 3, splits=1)
    assert torch.equal(at_fixed, at_all[idx_fixed])


def test_further_draw_erases_delta_of_the_observed_pixels(tiny_dataset):
    cfg = _cfg(tiny_dataset, corruption={"kind": "dust", "p": 0.2, "delta": 0.3, "sigma_n": 0.0, "seed": 0})
    erased = observed = 0
    for step in range(40):
        (_, a, at), *_ = _batches(cfg, step, splits=1)
        erased, observed = erased + float((a - at).sum()), observed + float(a.sum())
    assert erased / observed == pytest.approx(0.3, abs=0.02)


def test_checkpoints_from_before_further_draw_load_as_drawn_once_per_image(tiny_dataset, tmp_path):
    train(_cfg(tiny_dataset, steps=2), tmp_path / "run", progress=False)
    state = load_checkpoint(tmp_path / "run" / "model.pt")
    assert state["config"]["further_draw"] == "step"
    del state["config"]["further_draw"]
    assert model_from_checkpoint(state)[1].further_draw == "image"
    with pytest.raises(ValueError, match="further_draw='sometimes' is unknown"):
        _cfg(tiny_dataset, further_draw="sometimes")
